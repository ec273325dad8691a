# SPDX-License-Identifier: GPL-3.0-or-later
"""Send windows: the days and hours during which the emails of a scenario,
or of one of its activities, may leave, on the wall clock of the recipient.

The time zone of a recipient is the Time Zone of the marketing party (a
field this module adds to the party); without it, the window's own.

The window is a gate of the engine (``WindowGate``, see gates.py): it
holds the due entries outside their window until it opens, and the engine
writes why and until when they wait (``waiting_for``, ``waiting_since``,
``waiting_until``).  This file also holds what the frequency cap
(``marketing_automation_cap.py``) shares with the window: how each
activity is paced (``Activity.pacing``) and the due entries as pacing sees
them (``paced_entries``), read once for both gates.

An entry held back stays waiting with its ``at``: it is not consumed, and
once its time comes it goes as any due entry.
"""
import datetime
import logging
from collections import defaultdict, namedtuple

from trytond import backend
from trytond.cache import Cache
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.tools.timezone import SERVER
from trytond.transaction import Transaction

from . import pacing
from .exceptions import SendWindowError
from .gates import Gate, Verdict
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


def pacing_of(batch):
    "How each activity of the batch is paced: {id: Activity._pacing()}"
    Activity = Pool().get('marketing.automation.activity')
    return batch.shared('pacing', lambda: Activity.pacing(list(batch.due)))


def paced_entries(batch):
    """The Paced of the entries of the batch, by entry id, read once for
    the window and the cap"""
    def read():
        entries = batch.entries()
        rows = batch.RecordActivity.waiting_rows(batch)
        parties, timezones = _recipients(entries)
        return {
            e.id: Paced(e, batch.activity_of[e.id], rows[e.id].at,
                parties.get(e.id), timezones.get(parties.get(e.id)),
                *rows[e.id][1:])
            for e in entries}
    return batch.shared('paced', read)


def hold_held(paced, verdict, now):
    """Keep waiting, untouched, the Paced entries held meanwhile by a task
    queued before; return the others"""
    going = []
    for entry in paced:
        if entry.waiting_until and entry.waiting_until > now:
            verdict.hold(entry.entry.id)
        else:
            going.append(entry)
    return going


class WindowGate(Gate):
    """Holds the emails due outside the send window of their activity or
    scenario until it opens, in the recipient's time zone"""
    name = WINDOW
    label = "Send Window"

    def applies(self):
        return any(p['window'] for p in pacing_of(self.batch).values())

    def judge(self, entries):
        verdict = Verdict()
        pacing_ = pacing_of(self.batch)
        now = self.batch.now
        paced = paced_entries(self.batch)
        windowed = hold_held([
                paced[e.id] for e in entries
                if pacing_[self.batch.activity_of[e.id]]['window']],
            verdict, now)
        openings = {}
        for entry in windowed:
            activity = pacing_[entry.activity]
            window = activity['window']
            name = (entry.timezone
                or activity['timezone'] or server_timezone())
            key = (window, name)
            if key not in openings:
                tz = pacing.timezone(name) or pacing.timezone('UTC')
                if pacing.is_open(window, pacing.wall_clock(now, tz)):
                    openings[key] = None
                else:
                    openings[key] = pacing.next_opening(window, tz, now)
            if openings[key] is not None:
                verdict.hold(entry.entry.id, WINDOW, openings[key])
        return verdict


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    @classmethod
    def gates(cls):
        return {**super().gates(), WINDOW: WindowGate}


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
