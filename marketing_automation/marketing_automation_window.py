# SPDX-License-Identifier: GPL-3.0-or-later
"""Send windows: the days and hours during which the emails of a scenario,
or of one of its activities, may leave, on the wall clock of the recipient.

The time zone of a recipient is the Time Zone of the marketing party (a
field this module adds to the party); without it, the window's own.

This file also holds what the frequency cap (``marketing_automation_cap.py``)
shares with the windows: the pacing of due entries.  It plugs into the
engine's two hooks of the record activity:

- ``_filter_due`` (under the lock of ``do``) gives the due entries to
  ``_pace``, which each kind of pacing extends, and writes on the entries
  held back why they wait and until when (``waiting_for``,
  ``waiting_since``, ``waiting_until``), one statement per reason and time;
- ``_due_where`` keeps ``process`` from queueing an entry again before its
  ``waiting_until``, when some entry is held back (``_held``).

An entry held back stays waiting with its ``at``: it is not consumed, and
once its time comes it goes as any due entry.
"""
import datetime
import logging
from collections import defaultdict, namedtuple

from sql import Literal, Null
from sql.aggregate import Count
from sql.conditionals import Case

from trytond import backend
from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.tools.timezone import SERVER
from trytond.transaction import Transaction

from . import pacing, tools
from .exceptions import SendWindowError
from .marketing_automation_email import SEND_EMAIL
from .tools import BROWSE_SIZE

logger = logging.getLogger(__name__)

DAYS = [
    ('monday', "Monday"),
    ('tuesday', "Tuesday"),
    ('wednesday', "Wednesday"),
    ('thursday', "Thursday"),
    ('friday', "Friday"),
    ('saturday', "Saturday"),
    ('sunday', "Sunday"),
    ]
TIMEZONES = [(None, "")] + [(z, z) for z in pacing.timezones()]
WINDOW = 'window'

Paced = namedtuple('Paced', [
        'entry', 'activity', 'at', 'party', 'timezone',
        'waiting_for', 'waiting_since', 'waiting_until'])
Paced.__doc__ = """A due entry as the pacing sees it: the Entry, the id of
its activity, when it became due, the id of its recipient and the name of
the recipient's time zone (None when the record or the party is gone, or
the party has no time zone), and why, since when and until when it waited
last"""


def default_timezone():
    """The time zone of the company of the context when the company module
    is activated, else the server's"""
    pool = Pool()
    company_id = Transaction().context.get('company')
    if company_id is not None and company_id >= 0:
        try:
            Company = pool.get('company.company')
        except KeyError:
            Company = None
        if Company is not None:
            with Transaction().set_context(_check_access=False):
                timezone = Company(company_id).timezone
            if timezone:
                return timezone
    return server_timezone()


def server_timezone():
    "The name of the time zone of the server, UTC when it has none"
    name = getattr(SERVER, 'key', None)
    return name if pacing.timezone(name) else 'UTC'


class SendWindowMixin:
    """The fields of a send window: the days of the week on which it opens,
    the time it opens and closes, and the time zone of its wall clock for
    the recipients whose party has none"""
    __slots__ = ()

    window_days = fields.MultiSelection(
        DAYS, "Days", sort=False,
        help="The days of the week on which the emails may leave.")
    window_start = fields.Time(
        "From", help="When the window opens; empty for midnight.")
    window_end = fields.Time(
        "To",
        help="When the window closes; empty for midnight.\n"
        "A time before \"From\" closes the window on the next day.")
    window_timezone = fields.Selection(
        TIMEZONES, "Time Zone", translate=False,
        help="The time zone of the window for the recipients whose party "
        "has no time zone.")

    @classmethod
    def _window_fields_states(cls, shown):
        "Show the fields of the window when the PYSON shown is true"
        for name in [
                'window_days', 'window_start', 'window_end',
                'window_timezone']:
            field = getattr(cls, name)
            field.states = {
                'invisible': ~shown,
                }
        cls.window_timezone.states['required'] = shown

    @classmethod
    def default_window_days(cls):
        return tuple(d for d, _ in DAYS[:5])

    @classmethod
    def default_window_timezone(cls):
        return default_timezone()

    def window(self):
        "The pacing.Window of the fields, or WindowError"
        return pacing.window(
            self.window_days, self.window_start, self.window_end)

    def check_window(self):
        "Refuse a window in which no email could leave"
        try:
            self.window()
        except pacing.WindowError as exception:
            raise SendWindowError(gettext(
                    'marketing_automation.msg_window_%s' % exception.problem,
                    record=self.rec_name,
                    time=(self.window_start or datetime.time()).strftime(
                        '%H:%M'))) from exception


class Scenario(SendWindowMixin, metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    send_window = fields.Boolean(
        "Send Window",
        help="Send the emails only on some days and at some hours, "
        "on the wall clock of each recipient.")
    waiting_window = fields.Function(
        fields.Integer(
            "Waiting for the Window",
            help="The entries due now that wait for the send window."),
        'get_waiting')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._window_fields_states(Eval('send_window', False))

    @classmethod
    def default_send_window(cls):
        return False

    @classmethod
    def validate_fields(cls, scenarios, field_names):
        super().validate_fields(scenarios, field_names)
        if field_names is None or field_names & {
                'send_window', 'window_days', 'window_start', 'window_end'}:
            for scenario in scenarios:
                if scenario.send_window:
                    scenario.check_window()

    @classmethod
    def on_modification(cls, mode, scenarios, field_names=None):
        super().on_modification(mode, scenarios, field_names=field_names)
        Pool().get('marketing.automation.activity')._pacing_cache.clear()

    @classmethod
    def get_waiting(cls, scenarios, names):
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return {
            n: RecordActivity.count_waiting(
                n[len('waiting_'):], 'scenario', [s.id for s in scenarios])
            for n in names}


class Activity(SendWindowMixin, metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'
    # how the entries of an activity are paced, read for every due batch
    _pacing_cache = Cache(
        'marketing.automation.activity.pacing', context=False)

    send_window = fields.Selection([
            ('scenario', "Scenario's Window"),
            ('activity', "Own Window"),
            ('anytime', "Any Time"),
            ], "Send Window", required=True, sort=False,
        help="When the emails of the activity may leave: in the send "
        "window of the scenario, in a window of the activity, or at any "
        "time.")
    waiting_window = fields.Function(
        fields.Integer(
            "Waiting for the Window",
            help="The entries due now that wait for the send window."),
        'get_waiting')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._window_fields_states(Eval('send_window') == 'activity')

    @classmethod
    def default_send_window(cls):
        return 'scenario'

    @classmethod
    def validate_fields(cls, activities, field_names):
        super().validate_fields(activities, field_names)
        if field_names is None or field_names & {
                'send_window', 'window_days', 'window_start', 'window_end'}:
            for activity in activities:
                if activity.send_window == 'activity':
                    activity.check_window()

    @classmethod
    def on_modification(cls, mode, activities, field_names=None):
        super().on_modification(mode, activities, field_names=field_names)
        cls._pacing_cache.clear()

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//page[@id="send_window"]', 'states', {
                    'invisible': ~Eval('action', '').in_(
                        sorted(cls._paced_actions())),
                    }),
            ]

    @classmethod
    def _paced_actions(cls):
        "The actions whose work reaches the recipient, and so is paced"
        return {SEND_EMAIL}

    @classmethod
    def pacing(cls, activity_ids):
        "How the entries of each activity are paced: {id: _pacing()}"
        result, missing = {}, []
        for activity_id in activity_ids:
            value = cls._pacing_cache.get(activity_id)
            if value is None:
                missing.append(activity_id)
            else:
                result[activity_id] = value
        with Transaction().set_context(_check_access=False):
            for sub in grouped_slice(missing, BROWSE_SIZE):
                for activity in cls.browse(list(sub)):
                    value = activity._pacing()
                    cls._pacing_cache.set(activity.id, value)
                    result[activity.id] = value
        return result

    def _pacing(self):
        """How the entries of the activity are paced, as a dictionary: the
        pacing.Window of its emails (or None) under 'window', and the name
        of the time zone of that window under 'timezone'"""
        owner = None
        if self.action in self._paced_actions():
            if self.send_window == 'activity':
                owner = self
            elif self.send_window != 'anytime' and self.scenario.send_window:
                owner = self.scenario
        window = None
        if owner is not None:
            try:
                window = owner.window()
            except pacing.WindowError:
                # refused on save: stored by other means, it opens never
                logger.warning(
                    "the send window of %s is empty, ignored", owner)
        return {
            'window': window,
            'timezone': owner.window_timezone if owner else None,
            }

    @classmethod
    def get_waiting(cls, activities, names):
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return {
            n: RecordActivity.count_waiting(
                n[len('waiting_'):], 'activity', [a.id for a in activities])
            for n in names}


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    _waiting_states = {
        'invisible': ~Eval('waiting_for') | (Eval('state') != 'waiting'),
        }

    waiting_for = fields.Selection([
            (None, ""),
            (WINDOW, "Send Window"),
            ], "Waiting For", readonly=True, states=_waiting_states,
        help="Why the entry waits although it is due.")
    waiting_since = fields.DateTime(
        "Waiting Since", readonly=True, states=_waiting_states)
    waiting_until = fields.DateTime(
        "Waiting Until", readonly=True, states=_waiting_states,
        help="When the entry is due again.")

    del _waiting_states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # the entries held back, counted on the scenarios and activities
        cls._sql_indexes.add(Index(t,
                (t.activity, Index.Equality()),
                (t.waiting_until, Index.Range()),
                where=(t.state == 'waiting') & (t.waiting_for != Null)))

    @classmethod
    def _due_where(cls, table, now):
        # an entry held back waits for its time
        where = super()._due_where(table, now)
        if not cls._held(now):
            # an extra condition would change the plan of the query of the
            # due entries for nothing
            return where
        return where & (
            (table.waiting_until == Null) | (table.waiting_until <= now))

    @classmethod
    def _held(cls, now):
        "Whether some entries are held back beyond now (one indexed read)"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                Literal(1),
                where=(table.state == 'waiting')
                & (table.waiting_for != Null)
                & (table.waiting_until > now),
                limit=1))
        return cursor.fetchone() is not None

    @classmethod
    def _filter_due(cls, due, now):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        due = super()._filter_due(due, now)
        pacing_ = Activity.pacing(list(due))
        if not cls._paces(pacing_):
            return due
        # an entry held back meanwhile (by a task queued before) waits
        entries = [
            e for e in cls._paced_entries(due, now)
            if not e.waiting_until or e.waiting_until <= now]
        held = {}
        going = cls._pace(entries, pacing_, now, held)
        cls._hold(held, now)
        # what goes, or was settled otherwise, waits no more
        cls._release([
                e.entry.id for e in entries
                if e.waiting_for and e.entry.id not in held])
        result = defaultdict(list)
        # in the order they became due
        for paced in sorted(going, key=lambda e: (e.at, e.entry.id)):
            result[paced.activity].append(paced.entry)
        return result

    @classmethod
    def _paces(cls, pacing_):
        """Whether the pacing ({activity id: Activity._pacing()}) may hold
        back some entries of the activities"""
        return any(p['window'] for p in pacing_.values())

    @classmethod
    def _paced_entries(cls, due, now):
        "The Paced of the entries of due"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        activity_of = {e.id: a for a, es in due.items() for e in es}
        entries = [e for es in due.values() for e in es]
        rows = {}
        for sub in grouped_slice(
                [e.id for e in entries], backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.at, table.waiting_for,
                    table.waiting_since, table.waiting_until,
                    where=reduce_ids(table.id, list(sub))))
            rows.update((r[0], r[1:]) for r in cursor)
        parties, timezones = _recipients(entries)
        return [
            Paced(e, activity_of[e.id], rows[e.id][0], parties.get(e.id),
                timezones.get(parties.get(e.id)), *rows[e.id][1:])
            for e in entries]

    @classmethod
    def _pace(cls, entries, pacing_, now, held):
        """The Paced entries that may go now; held gets why and until when
        the others wait ({entry id: (reason, until)}), unless the pacing
        settled them otherwise

        An override filters what super() lets go."""
        windowed = [e for e in entries if pacing_[e.activity]['window']]
        if not windowed:
            return entries
        openings = {}
        for paced in windowed:
            activity = pacing_[paced.activity]
            window = activity['window']
            name = (paced.timezone
                or activity['timezone'] or server_timezone())
            key = (window, name)
            if key not in openings:
                tz = pacing.timezone(name) or pacing.timezone('UTC')
                if pacing.is_open(window, pacing.wall_clock(now, tz)):
                    openings[key] = None
                else:
                    openings[key] = pacing.next_opening(window, tz, now)
            if openings[key] is not None:
                held[paced.entry.id] = (WINDOW, openings[key])
        return [e for e in entries if e.entry.id not in held]

    @classmethod
    def _hold(cls, held, now):
        """Write why and until when the entries of held ({entry id: (reason,
        until)}) wait; since when stays for those that waited for the same
        reason"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        groups = defaultdict(list)
        for entry_id, key in held.items():
            groups[key].append(entry_id)
        for (reason, until), ids in groups.items():
            since = Case(
                (table.waiting_for == reason, table.waiting_since),
                else_=now)
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        [table.waiting_for, table.waiting_since,
                            table.waiting_until, table.write_date],
                        [reason, since, until, now],
                        where=reduce_ids(table.id, list(sub))))

    @classmethod
    def _release(cls, ids):
        "Forget why the entries of ids waited"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.waiting_for, table.waiting_since,
                        table.waiting_until],
                    [Null, Null, Null],
                    where=reduce_ids(table.id, list(sub))))

    @classmethod
    def count_waiting(cls, reason, by, ids):
        """How many entries of each of ids wait now for reason: ids are
        activities or scenarios, as by says"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        table = cls.__table__()
        record = Record.__table__()
        cursor = Transaction().connection.cursor()
        now = tools.now()
        if by == 'scenario':
            from_ = table.join(record, condition=table.record == record.id)
            column = record.scenario
        else:
            from_, column = table, table.activity
        counts = dict.fromkeys(ids, 0)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*from_.select(
                    column, Count(),
                    where=reduce_ids(column, list(sub))
                    & (table.state == 'waiting')
                    & (table.waiting_for == reason)
                    & (table.waiting_until > now),
                    group_by=[column]))
            counts.update(cursor)
        return counts


def _recipients(entries):
    """The id of the marketing party of each entry whose party exists, by
    entry id, and the name of the time zone of each of these parties that
    has one

    The parties of records of parties are read from their references."""
    pool = Pool()
    Party = pool.get('party.party')
    party = Party.__table__()
    cursor = Transaction().connection.cursor()
    candidates, others = {}, defaultdict(lambda: defaultdict(list))
    for entry in entries:
        model, record_id = entry.reference.split(',')
        if model == Party.__name__:
            candidates[entry.id] = int(record_id)
        else:
            others[model][int(record_id)].append(entry.id)
    with Transaction().set_context(_check_access=False, active_test=False):
        for model, entries_of in others.items():
            Model = pool.get(model)
            for sub in grouped_slice(list(entries_of), BROWSE_SIZE):
                for record in Model.search([('id', 'in', list(sub))]):
                    for entry_id in entries_of[record.id]:
                        if record.marketing_party:
                            candidates[entry_id] = record.marketing_party.id
    timezones = {}
    for sub in grouped_slice(
            set(candidates.values()), backend.MAX_QUERY_PARAMS):
        cursor.execute(*party.select(
                party.id, party.marketing_timezone,
                where=reduce_ids(party.id, list(sub))))
        timezones.update(cursor)
    return (
        {e: p for e, p in candidates.items() if p in timezones},
        {p: t for p, t in timezones.items() if t})
