# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine that moves records through the scenarios.

A scenario enters records (``Scenario.trigger``); each entry of a record into
an activity is a record activity that waits until it is due and is then done
(``RecordActivity.process`` and ``do``, which ``Activity.advance`` the
entries through their activity); the events of an action (an email opened
or clicked) make the children waiting for them due
(``RecordActivity.on_events``).

The engine knows no action by name: each action plugs into the activity
(see ``Activity`` in ``marketing_automation.py``), the sending of emails
first of all (``marketing_automation_email.py``).

The engine works on sets: one statement enters a batch of records, one
statement schedules the children of a batch, and so on.  Only the activity's
action and its condition look at the underlying records one by one.

Its methods extend the models of ``marketing_automation.py``, which declare
the fields, the views and the checks.
"""
import datetime
import logging
import uuid
from collections import defaultdict, namedtuple

from sql import Cast, Literal, Null
from sql.aggregate import Count
from sql.conditionals import Case
from sql.operators import Concat, Exists

from trytond import backend
from trytond.i18n import gettext
from trytond.model import EvalEnvironment
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import PYSONDecoder
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import gates, tools
from .exceptions import ActivityFault, ConditionError
from .gates import DueBatch
from .overrides import Run, current_run, overridden, running, stop_running
from .tools import (
    BROWSE_SIZE, batch_size, contained, for_update, none_of, queue,
    skip_conflicts)

logger = logging.getLogger(__name__)

Entry = namedtuple('Entry', ['id', 'record', 'reference'])
Entry.__doc__ = """A due record activity: its id, the id of its marketing
record and the reference of the underlying record ('model,id')"""
EventKind = namedtuple(
    'EventKind', ['name', 'action', 'label', 'negative_label'])
EventKind.__doc__ = """An event that an action produces, which the children
of its activities wait for (or wait for it not to happen): its name is also
the Boolean column of the record activity that flags it; declared once with
Activity.declare_event"""
Waiting = namedtuple(
    'Waiting', ['at', 'waiting_for', 'waiting_since', 'waiting_until'])
Waiting.__doc__ = """When a due entry became due, and why, since when and
until when it waited last"""
Outcome = namedtuple('Outcome', ['errors', 'later'])
Outcome.__doc__ = """What an action made of a batch of entries: errors maps
the entries whose action was not done to why, later holds the entries whose
action finishes later (see RecordActivity.complete)"""


class ConditionEnvironment(EvalEnvironment):
    """A record as conditions read it, with the access rights of the user
    of the transaction: a field (or a linked record) that they may not read
    is an error, not the default value that EvalEnvironment.get makes of
    every error, or the result of the condition would tell it

    The values are read as instances read them, unchecked: the fields are
    checked here, and the record by whoever evaluates the condition."""
    __slots__ = ()

    def __getitem__(self, item):
        FieldAccess = Pool().get('ir.model.field.access')
        name = item.removeprefix('_parent_')
        if name in self._model._fields:
            FieldAccess.check(self._model.__name__, [name], 'read')
        value = super().__getitem__(item)
        if (isinstance(value, EvalEnvironment)
                and not isinstance(value, ConditionEnvironment)):
            if value._record is not None and not readable_ids(
                    value._model, [value._record.id]):
                raise AccessError(gettext(
                        'marketing_automation'
                        '.msg_condition_record_refused',
                        record=str(value._record)))
            value = ConditionEnvironment(value._record, value._model)
        return value

    def get(self, item, default=None):
        try:
            return self[item]
        except AccessError:
            raise
        except Exception:
            return default


def condition_holds(condition, record):
    return bool(evaluate(condition, record))


def evaluate(expression, record):
    "The value of the PYSON expression for the record (its self)"
    env = tools.eval_environment()
    env['self'] = ConditionEnvironment(record, record.__class__)
    return PYSONDecoder(env).decode(expression)


def readable_ids(Model, ids):
    """The ids among ids of the records of Model that the user of the
    transaction may read, by the access rights and the record rules, or
    AccessError when they may read none of the model"""
    pool = Pool()
    ModelAccess = pool.get('ir.model.access')
    Rule = pool.get('ir.rule')
    ModelAccess.check(Model.__name__, 'read')
    if not Rule.domain_get(Model.__name__, mode='read'):
        return set(ids)
    readable = set()
    with Transaction().set_context(active_test=False):
        for sub in grouped_slice(ids):
            readable.update(map(int, Model.search(
                        [('id', 'in', list(sub))], order=[])))
    return readable


def _underlying_records(entries):
    """The instances of the records of the entries that still exist, by
    record activity id"""
    pool = Pool()
    by_model = defaultdict(dict)
    for entry in entries:
        model_name, record_id = entry.reference.split(',')
        by_model[model_name][int(record_id)] = entry.id
    underlying = {}
    with Transaction().set_context(active_test=False, _check_access=False):
        for model_name, entry_of in by_model.items():
            Model = pool.get(model_name)
            for sub in grouped_slice(list(entry_of), BROWSE_SIZE):
                for record in Model.search(
                        [('id', 'in', list(sub))], order=[]):
                    underlying[entry_of[record.id]] = record
    return underlying


def marketing_parties(records):
    "The id of the marketing party of each record (instances of models)"
    by_model = defaultdict(list)
    for record in records:
        by_model[record.__class__].append(record.id)
    parties = {}
    with Transaction().set_context(_check_access=False):
        for Model, ids in by_model.items():
            for sub in grouped_slice(ids, BROWSE_SIZE):
                for values in Model.read(list(sub), ['marketing_party']):
                    parties[Model(values['id'])] = values['marketing_party']
    return parties


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    @classmethod
    def trigger(cls, scenarios=None):
        """Enter the new records into the running scenarios

        A scenario that fails (its domain raises under the cron, for
        example) enters nothing and shows its error; the others go on."""
        if scenarios is None:
            scenarios = cls.search([('state', '=', 'running')])
        errors, exceptions, succeeded = {}, {}, []
        for scenario in scenarios:
            if scenario.state != 'running':
                continue
            exception = contained(scenario.enter_records)
            if exception is None:
                if scenario.error:
                    succeeded.append(scenario.id)
            else:
                errors[scenario.id] = gettext(
                    'marketing_automation.msg_scenario_fault',
                    scenario=scenario.rec_name,
                    error=tools.describe(exception))
                exceptions[scenario.id] = exception
        cls.clear_faults(succeeded)
        cls.set_faults(errors, exceptions)

    def enter_records(self):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        Model = pool.get(self.model)
        record = Record.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        database = transaction.database

        domain = self.decoded_domain()
        if self.unsubscribable:
            Unsubscribed = pool.get(
                'party.party-unsubscribed-marketing.automation.scenario')
            unsubscribed = Unsubscribed.__table__()
            domain = [domain, ('marketing_party', 'not in',
                    unsubscribed.select(
                        unsubscribed.party,
                        where=unsubscribed.scenario == self.id))]
        # only the records that the author may search: their record rules
        # are in the query
        with self.as_author():
            candidates = Model.search(domain, order=[], query=True)
        candidates = candidates.select(candidates.id)
        reference = Concat(
            self.model + ',',
            Cast(candidates.id, database.sql_type('VARCHAR').base))
        unknown = ~Exists(record.select(
                Literal(1),
                where=(record.scenario == self.id)
                & (record.record == reference)))

        on_conflict = skip_conflicts(record)
        columns = [record.create_uid, record.create_date, record.scenario,
            record.record, record.blocked, record.uuid]
        random_hex = tools.random_hex()
        rows_made_by_database = (
            random_hex is not None and database.has_returning())
        RecordActivity = pool.get('marketing.automation.record.activity')
        roots = [a for a in self.activities]
        last_id = 0
        while True:
            cursor.execute(*candidates.select(
                    candidates.id,
                    where=unknown & (candidates.id > last_id),
                    order_by=[candidates.id.asc],
                    limit=batch_size()))
            ids = [i for i, in cursor]
            if not ids:
                break
            last_id = ids[-1]
            now = tools.now()
            if rows_made_by_database:
                # the rows are made by the database from the ids: the
                # statement stays short whatever the size of the batch
                model = Model.__table__()
                cursor.execute(*record.insert(columns,
                        model.select(
                            Literal(transaction.user), Literal(now),
                            Literal(self.id),
                            Concat(self.model + ',', Cast(
                                    model.id,
                                    database.sql_type('VARCHAR').base)),
                            Literal(False), random_hex,
                            where=reduce_ids(model.id, ids)),
                        on_conflict=on_conflict,
                        returning=[record.id, record.record]))
            else:
                uuids = [uuid.uuid4().hex for _ in ids]
                cursor.execute(*record.insert(columns, [
                            [transaction.user, now, self.id,
                                '%s,%s' % (self.model, i), False, u]
                            for i, u in zip(ids, uuids)],
                        on_conflict=on_conflict))
                cursor.execute(*record.select(
                        record.id, record.record,
                        where=record.uuid.in_(uuids)))
            rows = cursor.fetchall()
            if any(a.condition for a in roots):
                entered = [(i, Model(int(r.split(',')[1]))) for i, r in rows]
            else:
                # the instances serve only the conditions
                entered = [(i, None) for i, _ in rows]
            RecordActivity.schedule(roots, entered)


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    def conditions(self, pairs):
        """Whether the condition holds for the record of each pair (the id
        of a marketing record and the instance of its record), evaluated
        with the rights of the author of the activity: {instance: True,
        False or the exception that kept it from being evaluated}

        The condition is evaluated by Record.eval once per record when a
        module overrides it, else here for all of them.

        A record, or a field of it, that the author may not read is an
        error, as it would be for them over RPC: the result of a condition
        must not tell what they may not read.  The records are checked
        once for all against the rules."""
        Record = Pool().get('marketing.automation.record')
        records = [i for _, i in pairs]
        if not self.condition:
            return dict.fromkeys(records, True)
        marketing = {i: r for r, i in pairs}
        by_record = overridden(Record, 'eval')
        results = {}
        by_model = defaultdict(list)
        for record in records:
            by_model[record.__class__].append(record)
        with self.as_author():
            for Model, instances in by_model.items():
                try:
                    readable = readable_ids(Model, [r.id for r in instances])
                except AccessError as exception:
                    results.update(dict.fromkeys(instances, exception))
                    continue
                for record in instances:
                    if record.id not in readable:
                        results[record] = ConditionError(gettext(
                                'marketing_automation'
                                '.msg_record_activity_condition_refused',
                                activity=self.rec_name))
                        continue
                    try:
                        if by_record and marketing[record] is not None:
                            results[record] = bool(Record(
                                    marketing[record], record=record
                                    ).eval(self.condition))
                        else:
                            results[record] = condition_holds(
                                self.condition, record)
                    except Exception as exception:
                        results[record] = exception
        return results

    def advance(self, entries, **kwargs):
        """Advance the due entries through the activity: evaluate its
        condition, execute its action and enter the records into its
        children.

        Returns the Outcome: the entries whose action was not done, with
        why, and those whose action finishes later (they are completed by
        RecordActivity.complete).  Raises ActivityFault when the error is
        not one entry's.

        The entries go one at a time through execute when a module
        overrides it or the action's execute_<action>, or when the action
        has no execute_<action>_batch; else all together."""
        if self.one_at_a_time():
            return self._advance_each(entries, **kwargs)
        underlying = _underlying_records(entries)
        todo, errors = self._evaluate_conditions(entries, underlying)
        for entry in entries:
            if entry.id not in underlying:
                errors[entry.id] = gettext(
                    'marketing_automation.msg_record_activity_record_deleted')
        later = set()
        if todo:
            outcome = self.execute_batch(
                [e for e in entries if e.id in todo],
                {i: underlying[i] for i in todo})
            errors.update(outcome.errors)
            later = set(outcome.later)
        self.enter_children(
            [e for e in entries if e.id not in later], underlying)
        return Outcome(errors, later)

    def one_at_a_time(self):
        "Whether the entries of the activity go one at a time to execute"
        if overridden(self, 'execute'):
            return True
        if not self.action:
            return False
        return (overridden(self, 'execute_%s' % self.action)
            or not hasattr(self, 'execute_%s_batch' % self.action))

    def _advance_each(self, entries, **kwargs):
        """Advance the entries one at a time through execute, as Tryton's
        own module does, and return their Outcome

        An exception of execute is the error of its entry (its work is
        undone, and its record still enters the children), an
        ActivityFault stops the activity."""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        run = Run()
        failed = set()
        token = running(run)
        try:
            instances = RecordActivity.browse([e.id for e in entries])
            for entry, instance in zip(entries, instances):
                exception = contained(self.execute, instance, **kwargs)
                if isinstance(exception, ActivityFault):
                    raise exception
                if exception is not None:
                    failed.add(entry.id)
                    run.later.discard(entry.id)
                    run.errors[entry.id] = tools.describe(exception)
                    self.enter_children([entry])
        finally:
            stop_running(token)
        for method, ids in run.queued.values():
            ids = [i for i in ids if i not in failed]
            if ids:
                method(ids)
        return Outcome(run.errors, run.later)

    def _evaluate_conditions(self, entries, underlying):
        """Split the underlying records (entry id → record) of the entries
        into those whose condition holds and the errors of the others
        (entry id → message)

        Raise ActivityFault when the condition fails for every record of
        the batch (and there are several): the condition is wrong, not the
        records."""
        todo, errors, failures = [], {}, {}
        holds_for = self.conditions([
                (e.record, underlying[e.id]) for e in entries
                if e.id in underlying])
        for entry_id, record in underlying.items():
            holds = holds_for[record]
            if isinstance(holds, Exception):
                failures[entry_id] = tools.describe(holds)
                continue
            if holds:
                todo.append(entry_id)
            else:
                errors[entry_id] = gettext(
                    'marketing_automation'
                    '.msg_record_activity_condition_false')
        if failures and len(failures) == len(underlying) > 1:
            raise ActivityFault(gettext(
                    'marketing_automation.msg_activity_fault_condition',
                    activity=self.rec_name,
                    error=next(iter(failures.values()))))
        for entry_id, error in failures.items():
            errors[entry_id] = gettext(
                'marketing_automation.msg_record_activity_condition_error',
                error=error)
        return todo, errors

    def enter_children(self, entries, underlying=None):
        """Enter the records of the done entries into the children.

        underlying maps the ids of the entries to the instances of their
        records when the caller has them."""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        if not self.children or not entries:
            return
        if underlying is None:
            underlying = _underlying_records(entries)
        RecordActivity.schedule(
            self.children,
            [(e.record, underlying[e.id]) for e in entries
                if e.id in underlying])

    def execute_batch(self, entries, records):
        """Run the action for the due entries, whose underlying records are
        records (entry id → record), through its execute_<action>_batch,
        and return its Outcome"""
        if not self.action:
            return Outcome({}, set())
        return getattr(self, 'execute_%s_batch' % self.action)(
            entries, records)

    def execute(self, record_activity, **kwargs):
        """Do one due record activity, as Tryton's own module does: unless
        its record is gone or the condition does not hold, run the action
        through execute_<action>(record_activity, **kwargs); then enter its
        record into the children, unless the action finishes later.

        The engine calls it for each entry when a module overrides it (or
        the action's execute_<action>); what kept an entry's action from
        being done is reported to the engine through the current Run."""
        run = current_run()
        record = record_activity.record
        instance = record.record
        if instance is None or instance.id is None or instance.id < 0:
            run.errors[record_activity.id] = gettext(
                'marketing_automation.msg_record_activity_record_deleted')
            return
        entry = Entry(record_activity.id, record.id, str(instance))
        underlying = {entry.id: instance}
        todo, errors = self._evaluate_conditions([entry], underlying)
        run.errors.update(errors)
        if todo and self.action:
            getattr(self, 'execute_%s' % self.action)(
                record_activity, **kwargs)
        if entry.id not in run.later:
            self.enter_children([entry], underlying)


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    @classmethod
    def schedule(cls, activities, records):
        """Create the waiting entries of the activities for the records.

        records are (marketing record id, underlying record) pairs; only the
        activities with a condition read the underlying record, and one whose
        condition is false for a record does not get it."""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        record = Record.__table__()
        if not activities or not records:
            return
        if overridden(cls, 'get') or overridden(cls, 'set_delay'):
            cls._schedule_each(activities, records)
            return
        now = tools.now()
        new_values = cls._new_values()
        columns = [table.create_uid, table.create_date, table.record,
            table.activity, table.state, table.at] + [
            getattr(table, c) for c in new_values]
        on_conflict = skip_conflicts(table)
        for activity in activities:
            if activity.event and not activity.negative:
                at = None
            else:
                at = now + (activity.delay or datetime.timedelta())
            if activity.condition:
                # a condition that cannot be evaluated yet lets the record
                # wait: it is evaluated again when the entry is due, and
                # fails then with its error
                holds_for = activity.conditions(records)
                rows = [
                    [transaction.user, now, record_id, activity.id,
                        'waiting', at, *new_values.values()]
                    for record_id, instance in records
                    if holds_for[instance] is not False]
                for sub in grouped_slice(rows, batch_size()):
                    cursor.execute(*table.insert(
                            columns, list(sub), on_conflict=on_conflict))
            else:
                # one short statement: the ids of a batch are mostly
                # consecutive
                for sub in grouped_slice(
                        [r for r, _ in records], batch_size()):
                    cursor.execute(*table.insert(columns, record.select(
                                Literal(transaction.user), Literal(now),
                                record.id, Literal(activity.id),
                                Literal('waiting'), Literal(at),
                                *map(Literal, new_values.values()),
                                where=reduce_ids(record.id, sub)),
                            on_conflict=on_conflict))

    @classmethod
    def _schedule_each(cls, activities, records):
        """Create the entries as schedule does, each made by get (which
        calls set_delay), as Tryton's own module makes them: the way when a
        module overrides either"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        existing = set()
        record_ids = [r for r, _ in records]
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.record, table.activity,
                    where=reduce_ids(table.record, sub)
                    & reduce_ids(table.activity, [a.id for a in activities])))
            existing.update(cursor)
        marketing = dict(zip(record_ids, Record.browse(record_ids)))
        new = []
        for activity in activities:
            holds_for = {}
            if activity.condition:
                holds_for = activity.conditions(records)
            for record_id, instance in records:
                if (holds_for.get(instance) is False
                        or (record_id, activity.id) in existing):
                    continue
                new.append(cls.get(marketing[record_id], activity))
        cls.save(new)

    @classmethod
    def get(cls, record, activity):
        """A new entry of the marketing record into the activity, not saved,
        its time set by set_delay unless it waits for an event"""
        record_activity = cls(record=record, activity=activity)
        if not activity.event or activity.negative:
            record_activity.set_delay()
        return record_activity

    def set_delay(self):
        "Make the entry due after the delay of its activity from now"
        self.at = tools.now() + (self.activity.delay or datetime.timedelta())

    @classmethod
    def process(cls):
        """Run the periodic work of the gates, then queue the due entries of
        the running scenarios"""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        cursor = Transaction().connection.cursor()
        for gate in cls.ordered_gates():
            gate.periodic(cls, tools.now())
        now = tools.now()
        from_, (table, _, _, activity), running = cls._due()
        # One query: reading them by pages would search the due entries
        # again for each page.
        cursor.execute(*from_.select(
                table.id,
                where=(table.state == 'waiting')
                & (table.at != Null) & (table.at <= now)
                & none_of(cls.in_progress(table)) & running
                & Activity.runnable(activity, now)
                & cls._due_where(table, now),
                order_by=[table.id.asc]))
        queue(cls.__queue__.do, [i for i, in cursor])

    @classmethod
    def _due(cls):
        """The entries joined to their record, scenario and activity, and the
        condition that their record and scenario let them run"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        Scenario = pool.get('marketing.automation.scenario')
        Activity = pool.get('marketing.automation.activity')
        table = cls.__table__()
        record = Record.__table__()
        scenario = Scenario.__table__()
        activity = Activity.__table__()
        from_ = (table
            .join(record, condition=table.record == record.id)
            .join(scenario, condition=record.scenario == scenario.id)
            .join(activity, condition=table.activity == activity.id))
        running = (
            (scenario.state == 'running')
            & (record.blocked == Literal(False)))
        return from_, (table, record, scenario, activity), running

    @classmethod
    def _due_where(cls, table, now):
        """The SQL condition on the entries of table that they may be done
        at now, beside being waiting and past their time: an entry held
        until a time waits for it"""
        if not cls._held(now):
            # an extra condition would change the plan of the query of the
            # due entries for nothing
            return Literal(True)
        return (table.waiting_until == Null) | (table.waiting_until <= now)

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
        """The entries of due ({activity id: [Entry, …]}, locked) that are
        to be done now, once the gates have answered; the others are held
        or settled as the gates say, here"""
        pool = Pool()
        batch = DueBatch(cls, due, now)
        going = batch.entries()
        verdicts, asked = [], []
        for Gate in cls.ordered_gates():
            gate = Gate(batch)
            if not going or not gate.applies():
                continue
            verdict = gate.judge(going)
            answered = verdict.answered()
            going = [e for e in going if e.id not in answered]
            verdicts.append(verdict)
            asked.append(gate)
        for gate in asked:
            gate.admit(going)

        held, settled, faults = {}, {}, defaultdict(dict)
        for verdict in verdicts:
            held.update(verdict.held)
            settled.update(verdict.settled)
            for (model, record_id), fault in verdict.faults.items():
                faults[model][record_id] = fault
        cls._hold(
            {i: h for i, h in held.items() if h[0] is not None}, now)
        rows = batch.shared('rows', dict)
        cls._release([
                i for i, row in rows.items()
                if row.waiting_for and i not in held])
        cls._settle(settled, batch)
        for model, errors in faults.items():
            pool.get(model).set_faults(
                {i: m for i, (m, _) in errors.items()},
                {i: e for i, (_, e) in errors.items() if e is not None})

        result = defaultdict(list)
        # in the order they became due, when it is known
        if rows:
            going.sort(key=lambda e: (rows[e.id].at, e.id))
        for entry in going:
            result[batch.activity_of[entry.id]].append(entry)
        return result

    @classmethod
    def _settle(cls, settled, batch):
        "Settle the entries as the gates said (settled: {id: Settle})"
        leaving, skipped = set(), defaultdict(dict)
        entries = {e.id: e for e in batch.entries()}
        for entry_id, settle in settled.items():
            if settle.how == gates.LEAVE:
                leaving.add(entries[entry_id].record)
            else:
                skipped[settle.flags][entry_id] = settle.error
        Pool().get('marketing.automation.record').convert(leaving)
        for sub in grouped_slice(leaving, backend.MAX_QUERY_PARAMS):
            cls.leave(lambda table, sub=list(sub): reduce_ids(
                    table.record, sub))
        for flags, errors in skipped.items():
            cls.complete(errors, flags={f: list(errors) for f in flags})

    @classmethod
    def leave(cls, where):
        """Take out of their scenario the records whose entries match where
        (the goal reached): cancel their waiting entries, with the reason,
        and drop their emails that are still in the outbox

        where(table) is the SQL condition on the table of the record
        activities that selects the entries of the records.  An email that
        the mail server accepted is completed as any other."""
        pool = Pool()
        Email = pool.get('marketing.automation.email')
        email = Email.__table__()
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*email.delete(
                where=(email.state == 'pending')
                & email.record_activity.in_(table.select(
                        table.id,
                        where=(table.state == 'waiting') & where(table)))))
        cls.set_cancelled(
            lambda table: where(table) & none_of(cls.in_progress(table)),
            error=gettext(
                'marketing_automation.msg_record_activity_goal_reached'))

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
    def waiting_rows(cls, batch):
        """The Waiting row of each entry of the batch, read once for the
        batch and kept for the engine"""
        rows = batch.shared('rows', dict)
        missing = [e.id for e in batch.entries() if e.id not in rows]
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub in grouped_slice(missing, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.at, table.waiting_for,
                    table.waiting_since, table.waiting_until,
                    where=reduce_ids(table.id, list(sub))))
            rows.update((r[0], Waiting(*r[1:])) for r in cursor)
        return rows

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

    @classmethod
    def do(cls, record_activities, **kwargs):
        "Do the record activities that are still due"
        ids = list(map(int, record_activities))
        for sub in grouped_slice(ids, batch_size()):
            cls._do(cls._take_due(list(sub)), **kwargs)

    @classmethod
    def _take_due(cls, ids):
        """The entries of ids that are still due, locked for this
        transaction, by activity: {activity id: [Entry, …]}"""
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        now = tools.now()
        from_, (table, record, scenario, _), _ = cls._due()
        # Lock the entries so that concurrent workers do each one once.
        # They are found by their ids alone and checked once read: with a
        # condition on their state or time in the query, the database could
        # read every waiting entry to find them.
        cursor.execute(*from_.select(
                table.id, table.activity, table.record, record.record,
                table.state, table.at, record.blocked, scenario.state,
                where=reduce_ids(table.id, ids)
                & none_of(cls.in_progress(table)),
                order_by=[table.activity, table.id],
                for_=for_update(table)))
        due = defaultdict(list)
        for (id_, activity_id, record_id, reference, state, at, blocked,
                scenario_state) in cursor:
            if (state == 'waiting' and at is not None and at <= now
                    and not blocked and scenario_state == 'running'):
                due[activity_id].append(Entry(id_, record_id, reference))
        due = {a: es for a, es in cls._filter_due(due, now).items() if es}
        if due:
            # A worker waiting for these locks reads with a snapshot older
            # than this work: a lock alone would let it do the entries
            # again, a write makes it fail to serialize and retry with a
            # snapshot that sees it.
            for sub in grouped_slice(
                    [e.id for es in due.values() for e in es],
                    backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        [table.write_date], [now],
                        where=reduce_ids(table.id, sub)))
        return due

    @classmethod
    def _do(cls, due, **kwargs):
        """Advance the due entries ({activity id: [Entry, …]}) through their
        activities and mark them done; kwargs go to Activity.execute

        An activity that fails is paused and its entries wait, undone; the
        other activities go on."""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        now = tools.now()
        done, errors = [], {}
        faults, unexpected, succeeded = {}, {}, []

        opposite = overridden(cls, '_cancel_opposite')

        def advance(activity, entries):
            if opposite:
                cls._cancel_opposite(cls.browse([e.id for e in entries]))
            else:
                cls.cancel_twins(activity, [e.record for e in entries])
            outcome = activity.advance(entries, **kwargs)
            errors.update(outcome.errors)
            done.extend(e.id for e in entries if e.id not in outcome.later)

        for activity_id, entries in due.items():
            activity = Activity(activity_id)
            if activity.waits_after_fault(now):
                continue
            exception = contained(advance, activity, entries)
            if exception is None:
                if activity.error:
                    succeeded.append(activity.id)
            elif isinstance(exception, ActivityFault):
                faults[activity.id] = exception.message
            else:
                faults[activity.id] = gettext(
                    'marketing_automation.msg_activity_fault',
                    activity=activity.rec_name,
                    error=tools.describe(exception))
                unexpected[activity.id] = exception
        Activity.clear_faults(succeeded)
        Activity.set_faults(faults, unexpected)
        cls.set_done(done, errors)

    @classmethod
    def set_done(cls, ids, errors=None, flags=None):
        """Mark done the record activities of ids, with the errors (id →
        message) that kept their action from being done, and set the Boolean
        columns of flags ({column name: ids}) for their ids

        Each entry is written once, the error of an earlier attempt
        cleared: an entry updated twice leaves one more dead row behind in
        the table and its indexes."""
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        now = tools.now()
        errors = errors or {}
        flags = {c: set(i) for c, i in (flags or {}).items()}
        groups = defaultdict(list)
        for record_activity_id in ids:
            key = (errors.get(record_activity_id) or None, tuple(
                    c for c, flagged in flags.items()
                    if record_activity_id in flagged))
            groups[key].append(record_activity_id)
        for (error, flagged), group in groups.items():
            columns = [table.state, table.at, table.write_uid,
                table.write_date, table.error] + [
                getattr(table, c) for c in flagged]
            values = ['done', now, transaction.user, now, error] + [
                True] * len(flagged)
            for sub in grouped_slice(group, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        columns, values, where=reduce_ids(table.id, sub)))

    @classmethod
    def complete(cls, errors, flags=None):
        """Mark done the record activities whose action finished later and
        enter their records into the children: how an action that returned
        them as later reports their end.

        errors maps the ids of these record activities to the error that
        kept their action from being done (or None); flags are the Boolean
        columns to set, as for set_done."""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        Record = pool.get('marketing.automation.record')
        table = cls.__table__()
        record = Record.__table__()
        cursor = Transaction().connection.cursor()
        ids = list(errors)
        cls.set_done(ids, errors, flags)
        by_activity = defaultdict(list)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(
                    record, condition=table.record == record.id).select(
                    table.id, table.activity, table.record, record.record,
                    where=reduce_ids(table.id, sub)))
            for id_, activity_id, record_id, reference in cursor:
                by_activity[activity_id].append(
                    Entry(id_, record_id, reference))
        for activity_id, entries in by_activity.items():
            Activity(activity_id).enter_children(entries)

    @classmethod
    def set_cancelled(cls, where, error=None):
        """Cancel the waiting entries of the table of the record activities
        (its columns as cls.__table__() names them) that match where, with
        the error that says why, if any

        When a module overrides cancel, the entries go through it."""
        if overridden(cls, 'cancel'):
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.select(
                    table.id,
                    where=(table.state == 'waiting') & where(table)))
            ids = [i for i, in cursor]
            for sub in grouped_slice(ids, BROWSE_SIZE):
                cls.cancel(cls.browse(sub))
            if error and ids:
                for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                    cursor.execute(*table.update(
                            [table.error], [error],
                            where=reduce_ids(table.id, sub)))
            return
        cls._set_cancelled(where, error)

    @classmethod
    def cancel(cls, record_activities):
        "Cancel the record activities that are still waiting"
        ids = list(map(int, record_activities))
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cls._set_cancelled(lambda table: reduce_ids(table.id, sub))

    @classmethod
    def _cancel_opposite(cls, record_activities):
        """Cancel the entries of the same records waiting for the opposite
        of the event of the record activities' activities"""
        records = defaultdict(list)
        for record_activity in record_activities:
            records[record_activity.activity].append(
                record_activity.record.id)
        for activity, record_ids in records.items():
            cls.cancel_twins(activity, record_ids)

    @classmethod
    def _set_cancelled(cls, where, error=None):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        columns = [table.state, table.write_date]
        values = ['cancelled', tools.now()]
        if error:
            columns.append(table.error)
            values.append(error)
        cursor.execute(*table.update(
                columns, values,
                where=(table.state == 'waiting') & where(table)))

    @classmethod
    def set_due(cls, where, at):
        """Make due at at the waiting entries without a date that match
        where, as set_cancelled"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update(
                [table.at, table.write_date], [at, tools.now()],
                where=(table.state == 'waiting') & (table.at == Null)
                & where(table)))

    @classmethod
    def cancel_twins(cls, activity, record_ids):
        "Cancel the entries waiting for the opposite of the activity's event"
        twins = [a.id for a in activity.twins]
        if not twins:
            return
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            cls.set_cancelled(lambda table: (
                    reduce_ids(table.activity, twins)
                    & reduce_ids(table.record, sub)))

    @classmethod
    def on_events(cls, record_activities, events):
        """Flag the events on the done entries and make the children waiting
        for them due (or cancel those waiting for them not to happen)

        Each event is a Boolean column of the entry; an event already
        flagged changes nothing."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        ids = list(map(int, record_activities))
        if not ids:
            return
        flags = [getattr(table, e) for e in events]
        new = defaultdict(list)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.activity, table.record, *flags,
                    where=reduce_ids(table.id, sub)
                    & (table.state == 'done')))
            for id_, activity_id, record_id, *flagged in cursor:
                for event, done in zip(events, flagged):
                    if not done:
                        new[event].append((id_, activity_id, record_id))
        if not new:
            return
        flagged = {r[0] for rows in new.values() for r in rows}
        for sub in grouped_slice(flagged, backend.MAX_QUERY_PARAMS):
            # a flag already set stays set: one statement for every event
            cursor.execute(*table.update(
                    flags, [True] * len(flags),
                    where=reduce_ids(table.id, sub)))
        for event, rows in new.items():
            records = defaultdict(list)
            for _, activity_id, record_id in rows:
                records[activity_id].append(record_id)
            for activity_id, record_ids in records.items():
                cls._event_happened(activity_id, event, record_ids)

    @classmethod
    def _event_happened(cls, activity_id, event, record_ids):
        """Make due the children of the activity waiting for the event of
        the records, and cancel those waiting for it not to happen"""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        now = tools.now()
        each = overridden(cls, 'set_delay')
        for child_id, child_event, negative, delay in (
                Activity.event_children(activity_id)):
            if child_event != event:
                continue
            if each and not negative:
                cls._set_delay_each(child_id, record_ids)
                continue
            for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
                def where(table, child_id=child_id, sub=sub):
                    return ((table.activity == child_id)
                        & reduce_ids(table.record, sub))
                if negative:
                    cls.set_cancelled(where)
                else:
                    cls.set_due(where, now + (delay or datetime.timedelta()))

    @classmethod
    def _set_delay_each(cls, activity_id, record_ids):
        """Make due the entries of the records waiting for an event in the
        activity, each through set_delay: the way when a module overrides
        it"""
        waiting = []
        for sub in grouped_slice(record_ids, BROWSE_SIZE):
            waiting.extend(cls.search([
                        ('record', 'in', list(sub)),
                        ('activity', '=', activity_id),
                        ('state', '=', 'waiting'),
                        ('at', '=', None),
                        ], order=[('id', 'ASC')]))
        for record_activity in waiting:
            record_activity.set_delay()
        cls.save(waiting)
