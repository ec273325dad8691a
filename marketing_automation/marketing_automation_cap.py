# SPDX-License-Identifier: GPL-3.0-or-later
"""The frequency cap: at most so many marketing emails to a party in a
rolling period, across all the scenarios ([marketing] frequency_cap).

It is the last gate of the engine (``CapGate``, see gates.py), after the
send window, and reads the due entries as the window does
(``paced_entries``):

1. on PostgreSQL, the workers lock the rows of the parties of their batch
   (``marketing.automation.cap.party``), so that two of them never take
   the last slot of a party together;
2. one query reads the emails of these parties that count: those that the
   cap let go (``marketing.automation.cap.slot``) and that the mail server
   accepted within the longest period, or that wait in the outbox;
3. the entries of each party take the free slots in the order they became
   due; the others wait for the first moment they fit, or, if that is past
   [marketing] frequency_cap_delay since they first waited for the cap,
   are settled: done without their email (``email_capped``);
4. the entries that go take their slots (``CapGate.admit``).

The scenarios marked exempt are neither held back nor counted.
"""
import datetime
import functools
from collections import defaultdict

from sql import Conflict, Literal, Table
from sql.aggregate import Count, Sum
from sql.conditionals import Case
from sql.operators import Exists

from trytond import backend
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import pacing
from .gates import SKIP, Gate, Verdict
from .marketing_automation_email import SEND_EMAIL
from .marketing_automation_window import hold_held, paced_entries, pacing_of
from .tools import batch_size, for_update

CAP = 'cap'
# an email that the cap holds back waits a week at most by default
DEFAULT_DELAY = 7 * 24 * 60 * 60


def frequency_caps():
    "The pacing.Caps of [marketing] frequency_cap, or pacing.CapError"
    return _parsed_caps(config.get('marketing', 'frequency_cap', default=''))


@functools.lru_cache(maxsize=16)
def _parsed_caps(text):
    return tuple(pacing.parse_caps(text))


def cap_delay():
    """How long an email may wait for the cap, [marketing]
    frequency_cap_delay, or pacing.CapError"""
    value = config.get(
        'marketing', 'frequency_cap_delay', default=str(DEFAULT_DELAY))
    try:
        seconds = int(value)
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise pacing.CapError('delay', value)
    return datetime.timedelta(seconds=seconds)


class _Excluded(Table):
    """The row that ON CONFLICT DO UPDATE could not insert, named as the
    databases know it: python-sql's Excluded quotes it in upper case, a
    name that PostgreSQL does not know"""

    def __init__(self):
        super().__init__('excluded')

    @property
    def alias(self):
        return 'excluded'

    @property
    def has_alias(self):
        return False


Excluded = _Excluded()


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    frequency_cap_exempt = fields.Boolean(
        "Exempt from the Frequency Cap",
        help="Send the emails of the scenario whatever the frequency cap, "
        "and leave them out of its count: for the emails that must go, "
        "such as the confirmation of a subscription.")
    waiting_cap = fields.Function(
        fields.Integer(
            "Waiting for the Cap",
            help="The entries due now that wait for the frequency cap."),
        'get_waiting')

    @classmethod
    def default_frequency_cap_exempt(cls):
        return False


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    waiting_cap = fields.Function(
        fields.Integer(
            "Waiting for the Cap",
            help="The entries due now that wait for the frequency cap."),
        'get_waiting')
    email_capped = fields.Function(
        fields.Integer(
            "Emails Capped",
            states={
                'invisible': Eval('action') != SEND_EMAIL,
                },
            help="The emails not sent because the frequency cap held them "
            "back for longer than an email may wait."),
        'get_email_capped')

    def _pacing(self):
        pacing_ = super()._pacing()
        # whether the entries count against the cap, and are held by it
        pacing_['capped'] = (
            self.action in self._paced_actions()
            and not self.scenario.frequency_cap_exempt)
        return pacing_

    @classmethod
    def get_email_capped(cls, activities, name):
        "The number of done entries of each activity whose email was capped"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        counts = {a.id: 0 for a in activities}
        for sub in grouped_slice(activities, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.activity, Count(),
                    where=reduce_ids(table.activity, [a.id for a in sub])
                    & (table.state == 'done')
                    & (table.email_capped == Literal(True)),
                    group_by=[table.activity]))
            counts.update(cursor)
        return counts


class CapGate(Gate):
    """Holds the emails that would take a party over a frequency cap until
    they fit, and settles those that would wait too long: done, without
    their email"""
    name = CAP
    label = "Frequency Cap"

    def applies(self):
        if not any(p['capped'] for p in pacing_of(self.batch).values()):
            return False
        try:
            return bool(frequency_caps())
        except pacing.CapError:
            # the activities must show it
            return True

    @classmethod
    def periodic(cls, RecordActivity, now):
        RecordActivity._forget_slots(now)

    def judge(self, entries):
        RecordActivity = self.batch.RecordActivity
        verdict = Verdict()
        self.let_go = []
        pacing_ = pacing_of(self.batch)
        now = self.batch.now
        paced = paced_entries(self.batch)
        capped = [
            paced[e.id] for e in entries
            if pacing_[self.batch.activity_of[e.id]]['capped']
            and paced[e.id].party is not None]
        if not capped:
            return verdict
        try:
            caps, delay = frequency_caps(), cap_delay()
        except pacing.CapError as exception:
            error = gettext(
                'marketing_automation.msg_frequency_cap_%s'
                % exception.problem, rule=exception.rule)
            for activity_id in {e.activity for e in capped}:
                verdict.stop(
                    [e.entry.id for e in capped
                        if e.activity == activity_id],
                    'marketing.automation.activity', activity_id, error)
            return verdict
        if not caps:
            return verdict
        capped = hold_held(capped, verdict, now)

        parties = sorted({e.party for e in capped})
        RecordActivity._lock_caps(parties, now)
        sent = RecordActivity._sent(parties, caps, now)
        waiting = defaultdict(list)
        for entry in capped:
            waiting[entry.party].append(entry)
        error = gettext('marketing_automation.msg_record_activity_capped')
        for party, entries_ in waiting.items():
            entries_.sort(key=lambda e: (e.at, e.entry.id))
            count, fit = pacing.share(
                caps, sent.get(party, ()), now, len(entries_))
            self.let_go.extend(entries_[:count])
            for entry in entries_[count:]:
                since = (entry.waiting_since
                    if entry.waiting_for == CAP and entry.waiting_since
                    else now)
                if fit > since + delay:
                    verdict.settle(
                        entry.entry.id, SKIP, error, ['email_capped'])
                else:
                    verdict.hold(entry.entry.id, CAP, fit)
        return verdict

    def admit(self, entries):
        going = {e.id for e in entries}
        self.batch.RecordActivity._take_slots(
            [e for e in getattr(self, 'let_go', ()) if e.entry.id in going],
            self.batch.now)


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    email_capped = fields.Boolean(
        "Email Capped", readonly=True,
        states={
            'invisible': ~Eval('email_capped'),
            },
        help="The email was not sent: the frequency cap held it back for "
        "longer than an email may wait.")

    @classmethod
    def gates(cls):
        return {**super().gates(), CAP: CapGate}

    @classmethod
    def default_email_capped(cls):
        return False

    @classmethod
    def _lock_caps(cls, party_ids, now):
        """Take the rows of the caps of the parties for this transaction, on
        PostgreSQL

        Each row is written, so that a worker that waited for it fails to
        serialize and starts again with a snapshot that sees the emails of
        this one; in the order of the parties, so that two workers never
        wait for each other."""
        pool = Pool()
        CapParty = pool.get('marketing.automation.cap.party')
        lock = CapParty.__table__()
        if for_update(lock) is None:
            # SQLite serialises the transactions that write
            return
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        on_conflict = Conflict(
            lock, indexed_columns=[lock.party], columns=[lock.checked],
            values=[Excluded.checked])
        for sub in grouped_slice(party_ids, batch_size()):
            cursor.execute(*lock.insert(
                    [lock.create_uid, lock.create_date, lock.party,
                        lock.checked],
                    [[transaction.user, now, p, now] for p in sub],
                    on_conflict=on_conflict))

    @classmethod
    def _sent(cls, party_ids, caps, now):
        """The moments of the emails of each party that count against the
        caps: when the mail server accepted them, now for those on their
        way"""
        pool = Pool()
        CapSlot = pool.get('marketing.automation.cap.slot')
        Email = pool.get('marketing.automation.email')
        slot = CapSlot.__table__()
        table = cls.__table__()
        email = Email.__table__()
        cursor = Transaction().connection.cursor()
        since = now - pacing.longest_period(caps)
        accepted = ((table.state == 'done')
            & (table.email_sent == Literal(True))
            & (table.at > since))
        on_its_way = (table.state == 'waiting') & Exists(email.select(
                Literal(1),
                where=(email.record_activity == table.id)
                & (email.state != 'failed')))
        sent = defaultdict(list)
        for sub in grouped_slice(party_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*slot.join(
                    table, condition=slot.record_activity == table.id
                    ).select(
                    slot.party, table.state, table.at,
                    where=reduce_ids(slot.party, list(sub))
                    & (accepted | on_its_way)))
            for party_id, state, at in cursor:
                sent[party_id].append(at if state == 'done' else now)
        return sent

    @classmethod
    def _take_slots(cls, entries, now):
        "Count the Paced entries that go against the caps of their parties"
        pool = Pool()
        CapSlot = pool.get('marketing.automation.cap.slot')
        slot = CapSlot.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        columns = [slot.create_uid, slot.create_date, slot.party,
            slot.record_activity, slot.at]
        # the slot of an entry whose work was undone is taken again
        on_conflict = None
        if transaction.database.has_insert_on_conflict():
            on_conflict = Conflict(
                slot, indexed_columns=[slot.record_activity],
                columns=[slot.party, slot.at],
                values=[Excluded.party, Excluded.at])
        for sub in grouped_slice(entries, batch_size()):
            sub = list(sub)
            if on_conflict is None:
                cursor.execute(*slot.delete(where=reduce_ids(
                            slot.record_activity, [e.entry.id for e in sub])))
            cursor.execute(*slot.insert(columns, [
                        [transaction.user, now, e.party, e.entry.id, now]
                        for e in sub],
                    on_conflict=on_conflict))

    @classmethod
    def _forget_slots(cls, now):
        "Delete the slots that count no more, older than the longest period"
        pool = Pool()
        CapSlot = pool.get('marketing.automation.cap.slot')
        slot = CapSlot.__table__()
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        try:
            caps = frequency_caps()
        except pacing.CapError:
            return
        if not caps:
            return
        since = now - pacing.longest_period(caps)
        counts = Exists(table.select(
                Literal(1),
                where=(table.id == slot.record_activity)
                & ((table.state == 'waiting') | (table.at > since))))
        cursor.execute(*slot.delete(where=(slot.at <= since) & ~counts))


class CapParty(ModelSQL):
    """The row of a party that the workers lock, on PostgreSQL, to decide
    one after the other which emails the frequency cap lets go to it"""
    __name__ = 'marketing.automation.cap.party'

    party = fields.Many2One(
        'party.party', "Party", required=True, ondelete='CASCADE')
    checked = fields.DateTime(
        "Checked", help="When a worker last decided for the party.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('party_unique', Unique(t, t.party),
                'marketing_automation.msg_cap_party_unique'),
            ]


class CapSlot(ModelSQL):
    """An email that the frequency cap let go to a party, kept as long as
    it may count against the cap"""
    __name__ = 'marketing.automation.cap.slot'

    party = fields.Many2One(
        'party.party', "Party", required=True, ondelete='CASCADE')
    record_activity = fields.Many2One(
        'marketing.automation.record.activity', "Record Activity",
        required=True, ondelete='CASCADE')
    at = fields.DateTime("At", help="When the cap let the email go.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('record_activity_unique', Unique(t, t.record_activity),
                'marketing_automation.msg_cap_slot_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.party, Index.Equality())),
                Index(t, (t.at, Index.Range())),
                })


class ReportingActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.activity'

    email_capped = fields.Integer(
        "Emails Capped",
        states={
            'invisible': Eval('activity_action') != SEND_EMAIL,
            },
        help="The emails not sent because of the frequency cap.")

    @classmethod
    def _columns(cls, tables, withs):
        record_activity = tables['record_activity']
        capped = record_activity.email_capped == Literal(True)
        return super()._columns(tables, withs) + [
            Sum(Case((capped, 1), else_=0)).as_('email_capped'),
            ]
