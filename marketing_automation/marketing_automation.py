# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenarios, their activities, and the engine that moves records through them.

A scenario enters records (``Scenario.trigger``); each entry of a record into
an activity is a record activity that waits until it is due and is then done
(``RecordActivity.process`` and ``do``, which ``Activity.advance`` the
entries through their activity); the events of an action (an email opened
or clicked) make the children waiting for them due
(``RecordActivity.on_events``).

The engine knows no action by name: each action plugs into the activity
(see ``Activity``), the sending of emails first of all
(``marketing_automation_email.py``).

The engine works on sets: one statement enters a batch of records, one
statement schedules the children of a batch, and so on.  Only the activity's
action and its condition look at the underlying records one by one.
"""
import datetime
import logging
import uuid
from collections import defaultdict, namedtuple

from sql import Cast, Literal, Null, Union, With
from sql.aggregate import Count, Sum
from sql.conditionals import Case, Coalesce, NullIf
from sql.functions import Substring
from sql.operators import Concat, Exists, Like

from trytond import backend
from trytond.cache import Cache
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import (
    EvalEnvironment, Index, ModelSQL, ModelView, Unique, Workflow, fields)
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import PYSON, Bool, Eval, If, PYSONDecoder
# The tests written for Tryton's own module keep their emails from leaving by
# replacing these two names of this file: the outbox honours them (see
# marketing_automation_email.Email._smtp_server).
from trytond.sendmail import (  # noqa: F401
    SMTPDataManager, send_message_transactional)
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import gates, mailing, tools
from .exceptions import (
    ActivityError, ActivityFault, ConditionError, DomainError)
from .gates import DueBatch
from .mixin import MarketingAutomationMixin
from .overrides import Run, current_run, overridden, running, stop_running
from .tools import (
    BROWSE_SIZE, acting_as, acting_user, batch_size, contained, for_update,
    none_of, queue, savepoint, skip_conflicts)

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


class _ConditionEnvironment(EvalEnvironment):
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
                and not isinstance(value, _ConditionEnvironment)):
            if value._record is not None and not readable_ids(
                    value._model, [value._record.id]):
                raise AccessError(gettext(
                        'marketing_automation'
                        '.msg_condition_record_refused',
                        record=str(value._record)))
            value = _ConditionEnvironment(value._record, value._model)
        return value

    def get(self, item, default=None):
        try:
            return self[item]
        except AccessError:
            raise
        except Exception:
            return default


def _condition_holds(condition, record):
    return bool(_evaluate(condition, record))


def _evaluate(expression, record):
    "The value of the PYSON expression for the record (its self)"
    env = tools.eval_environment()
    env['self'] = _ConditionEnvironment(record, record.__class__)
    return PYSONDecoder(env).decode(expression)


def fields_read(condition):
    """The names of the fields of the record (self) that the PYSON
    condition reads by name: Eval('self.FIELD') and
    Eval('self', {}).get('FIELD')"""
    names = set()

    def pyson(value):
        return value.pyson() if isinstance(value, PYSON) else value

    def is_self(value):
        value = pyson(value)
        return (isinstance(value, dict) and value.get('__class__') == 'Eval'
            and value.get('v') == 'self')

    def walk(value):
        value = pyson(value)
        if isinstance(value, dict):
            kind, name = value.get('__class__'), value.get('v')
            field = None
            if kind == 'Eval' and isinstance(name, str):
                base, _, path = name.partition('.')
                if base == 'self' and path:
                    field = path.split('.', 1)[0]
            elif (kind == 'Get' and is_self(name)
                    and isinstance(value.get('k'), str)):
                field = value['k']
            if field:
                names.add(field.removeprefix('_parent_'))
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
    walk(PYSONDecoder(noeval=True).decode(condition))
    return names


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


def _savepoint(cursor, name):
    savepoint(cursor, name)


def _rollback_to(cursor, name):
    cursor.execute('ROLLBACK TO SAVEPOINT %s' % name)


def _release(cursor, name):
    cursor.execute('RELEASE SAVEPOINT %s' % name)


def retry_delay():
    "How long a paused activity or a failing scenario waits to be tried again"
    return datetime.timedelta(
        seconds=config.getint('marketing', 'fault_retry', default=3600))


class FaultMixin:
    """The error that stops a scenario or an activity, shown where the
    marketer sees it

    The engine writes it with SQL, so that any write of a user (an edit) is
    known to be one and clears it."""
    __slots__ = ()

    error = fields.Text(
        "Error", readonly=True,
        states={
            'invisible': ~Eval('error'),
            })
    error_date = fields.DateTime(
        "Error Since", readonly=True,
        states={
            'invisible': ~Eval('error'),
            })

    @classmethod
    def set_faults(cls, errors, exceptions=None):
        """Show the errors (id → message) on the records and log those that
        are new, with the traceback of their exception (id → exception)

        A fault that comes back at each attempt is logged once."""
        exceptions = exceptions or {}
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = tools.now()
        for sub in grouped_slice(list(errors), backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            cursor.execute(*table.select(
                    table.id, table.error,
                    where=reduce_ids(table.id, sub)))
            shown = dict(cursor)
            for record_id in sub:
                error = errors[record_id]
                if shown.get(record_id) != error:
                    logger.error(
                        "%s %s stops: %s", cls.__name__, record_id, error,
                        exc_info=exceptions.get(record_id))
                cursor.execute(*table.update(
                        [table.error, table.error_date], [error, now],
                        where=table.id == record_id))

    @classmethod
    def clear_faults(cls, ids):
        "Forget the errors of the records of ids"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub in grouped_slice(list(ids), backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.error, table.error_date], [Null, Null],
                    where=reduce_ids(table.id, list(sub))
                    & (table.error != Null)))

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        super().on_modification(mode, records, field_names=field_names)
        if mode == 'write' and not {'error', 'error_date'} >= set(
                field_names or ()):
            # the marketer changed something: try again
            cls.clear_faults([r.id for r in records])

    @classmethod
    def runnable(cls, table, now):
        "The SQL condition on table that its records are not stopped"
        return (table.error == Null) | (
            table.error_date <= now - retry_delay())

    def waits_after_fault(self, now=None):
        "Whether the record is stopped by an error and not yet to be retried"
        if not self.error or not self.error_date:
            return False
        return (now or tools.now()) < self.error_date + retry_delay()


class AuthorMixin:
    """What a marketer writes (a domain, a condition, a template) runs with
    the rights of its author: the user who last wrote it

    Not its creator: a marketer who rewrites what an administrator created
    must not read with the administrator's rights.  Whoever writes one of
    the fields of ``_authored_fields`` becomes the author; the field itself
    cannot be written."""
    __slots__ = ()

    author = fields.Many2One(
        'res.user', "Author", readonly=True, ondelete='RESTRICT',
        help="The user who last wrote what runs on their behalf: it runs "
        "with this user's access rights.")

    @classmethod
    def __register__(cls, module):
        table_h = cls.__table_handler__(module)
        authored = table_h.column_exist('author')
        super().__register__(module)
        if not authored:
            # the rows written before: by their last writer (root writes
            # for the administrator)
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update([table.author], [NullIf(
                            Coalesce(table.write_uid, table.create_uid),
                            0)]))

    @classmethod
    def _authored_fields(cls):
        """The names of the fields that make their writer the author: what
        runs on the author's behalf reads them"""
        return {'author'}

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'create' or not cls._authored_fields().isdisjoint(values):
            values['author'] = Transaction().user or None
        return values


class Scenario(FaultMixin, AuthorMixin, Workflow, ModelSQL, ModelView):
    __name__ = 'marketing.automation.scenario'

    _states = {
        'readonly': Eval('state') != 'draft',
        }

    name = fields.Char("Name", translate=True)
    model = fields.Selection(
        'get_models', "Model", required=True, states=_states)
    domain = fields.Char(
        "Domain", required=True, states=_states,
        help="A PYSON domain on the model that selects the records "
        "entering the scenario.")
    activities = fields.One2Many(
        'marketing.automation.activity', 'parent', "Activities")
    record_count = fields.Function(
        fields.Integer("Records"), 'get_record_count')
    record_count_blocked = fields.Function(
        fields.Integer("Records Blocked"), 'get_record_count')
    block_rate = fields.Function(
        fields.Float("Block Rate", digits=(1, 2)), 'get_rate')
    block_rate_trend = fields.Function(
        fields.Char("Block Rate Trend"), 'get_trend')
    unsubscribable = fields.Boolean(
        "Unsubscribable",
        help="If checked, a party who unsubscribes from one record "
        "never receives the emails of this scenario again.")
    state = fields.Selection([
            ('draft', "Draft"),
            ('running', "Running"),
            ('stopped', "Stopped"),
            ], "State", required=True, readonly=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.state, Index.Equality(cardinality='low'))))
        cls._transitions |= {
            ('draft', 'running'),
            ('running', 'stopped'),
            ('stopped', 'draft'),
            }
        cls._buttons.update({
                'draft': {
                    'invisible': Eval('state') != 'stopped',
                    'depends': ['state'],
                    },
                'run': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'stop': {
                    'invisible': Eval('state') != 'running',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def get_models(cls):
        pool = Pool()
        Model = pool.get('ir.model')
        names = sorted(
            name for name, klass in pool.iterobject()
            if issubclass(klass, MarketingAutomationMixin))
        return [(n, Model.get_name(n)) for n in names]

    @classmethod
    def default_model(cls):
        return 'party.party'

    @classmethod
    def default_domain(cls):
        return '[]'

    @classmethod
    def default_unsubscribable(cls):
        return False

    @classmethod
    def default_state(cls):
        return 'draft'

    def get_rec_name(self, name):
        return self.name or str(self.id)

    def decoded_domain(self):
        return PYSONDecoder(tools.eval_environment()).decode(self.domain)

    @classmethod
    def _authored_fields(cls):
        return super()._authored_fields() | {'model', 'domain'}

    def author_context(self, user_id):
        """The context of the work done on the scenario for the user of
        user_id (its author, or the author of one of its activities)

        Override it to add to it: with the company module, the scenario's
        company is the only one."""
        return {}

    def as_author(self):
        """Run the block with the rights of the author of the scenario: its
        domain, its goal and its counts select what the author may search"""
        user_id = acting_user(self.author)
        return acting_as(user_id, self.author_context(user_id))

    @classmethod
    def validate_fields(cls, scenarios, field_names):
        super().validate_fields(scenarios, field_names)
        if field_names is None or field_names & {'domain', 'model'}:
            for scenario in scenarios:
                scenario.check_domain()

    def check_domain(self):
        pool = Pool()
        cursor = Transaction().connection.cursor()
        try:
            domain = self.decoded_domain()
            if not isinstance(domain, list):
                raise ValueError("a domain is a list of clauses")
            Model = pool.get(self.model)
            _savepoint(cursor, 'marketing_domain')
            try:
                with self.as_author():
                    Model.search(domain, limit=1, order=[])
            except Exception:
                _rollback_to(cursor, 'marketing_domain')
                raise
            else:
                _release(cursor, 'marketing_domain')
        except Exception as exception:
            raise DomainError(gettext(
                    'marketing_automation.msg_scenario_invalid_domain',
                    domain=self.domain, scenario=self.rec_name,
                    exception=exception)) from exception

    @classmethod
    def get_record_count(cls, scenarios, names):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        cursor = Transaction().connection.cursor()

        result = {n: {s.id: 0 for s in scenarios} for n in names}
        for sub in grouped_slice(scenarios, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record.select(
                    record.scenario, Count(),
                    Sum(Case((record.blocked, 1), else_=0)),
                    where=reduce_ids(record.scenario, [s.id for s in sub]),
                    group_by=[record.scenario]))
            for scenario_id, count, blocked in cursor:
                if 'record_count' in result:
                    result['record_count'][scenario_id] = count
                if 'record_count_blocked' in result:
                    result['record_count_blocked'][scenario_id] = (
                        blocked or 0)
        if 'record_count' in result:
            for scenario in scenarios:
                if scenario.state == 'draft':
                    result['record_count'][scenario.id] = (
                        scenario.audience_count())
        return result

    def author_name(self):
        "The name of the user whose rights the scenario runs with"
        User = Pool().get('res.user')
        return User(acting_user(self.author)).rec_name

    @classmethod
    def get_rate(cls, scenarios, name):
        counts = cls.get_record_count(
            scenarios, ['record_count', 'record_count_blocked'])
        rates = {}
        for scenario in scenarios:
            # A draft scenario has previewed counts, not records.
            if scenario.state == 'draft':
                rates[scenario.id] = 0.
                continue
            rates[scenario.id] = tools.round_rate(
                counts['record_count_blocked'][scenario.id],
                counts['record_count'][scenario.id])
        return rates

    @classmethod
    def get_trend(cls, scenarios, name):
        "The sparkline of the rate that name is the trend of"
        pool = Pool()
        Reporting = pool.get('marketing.automation.reporting.scenario')
        starts, period = tools.trend_periods()
        rate = name[:-len('_trend')]
        series = Reporting.series(
            'scenario', [s.id for s in scenarios], [rate],
            period, starts[0])
        return {
            s: mailing.sparkline([
                    rows[d][rate] if d in rows else 0
                    for d in starts])
            for s, rows in series.items()}

    @classmethod
    def copy(cls, scenarios, default=None):
        default = default.copy() if default else {}
        default.setdefault('state', 'draft')
        return super().copy(scenarios, default=default)

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, scenarios):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('running')
    def run(cls, scenarios):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('stopped')
    def stop(cls, scenarios):
        pass

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

    @classmethod
    def unsubscribe(cls, records):
        """Block the records and keep their parties out of the scenarios
        that are unsubscribable"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        Unsubscribed = pool.get(
            'party.party-unsubscribed-marketing.automation.scenario')
        Record.write(
            [r for r in records if not r.blocked], {'blocked': True})
        pairs = {
            (r.marketing_party.id, r.scenario) for r in records
            if r.scenario.unsubscribable and r.marketing_party}
        for party_id, scenario in pairs:
            if not Unsubscribed.search([
                        ('party', '=', party_id),
                        ('scenario', '=', scenario.id),
                        ], limit=1):
                Unsubscribed.create([
                        {'party': party_id, 'scenario': scenario.id}])
            # the other records of the party leave the scenario too
            Model = pool.get(scenario.model)
            with Transaction().set_context(active_test=False):
                query = Model.search(
                    [('marketing_party', '=', party_id)],
                    order=[], query=True)
            Record.write(Record.search([
                        ('scenario', '=', scenario.id),
                        ('blocked', '=', False),
                        ('record', 'in', [
                                '%s,%s' % (scenario.model, i)
                                for i in _ids(query)]),
                        ]), {'blocked': True})


def _ids(query):
    cursor = Transaction().connection.cursor()
    cursor.execute(*query)
    return [i for i, in cursor]


class Activity(FaultMixin, AuthorMixin, ModelSQL, ModelView):
    """A node of the tree of a scenario, and the action it runs

    The actions plug in: another file of this module, or another module,
    adds a value to ``action`` and the methods of its name (see
    doc/design.rst, Extending):

    - ``execute_<action>_batch(entries, records)`` runs it set-based for a
      batch of due entries and returns an ``Outcome``, or
      ``execute_<action>(record_activity)`` runs it for one entry, as in
      Tryton's own module;
    - ``check_action_<action>(field_names)`` refuses an activity that
      cannot run it, when the fields of field_names (None for all) changed;
    - ``declare_event(EventKind(...))``, called from ``__setup__``, declares
      each event it produces, for the children to wait for.

    The engine calls ``advance`` with the due entries of the activity."""
    __name__ = 'marketing.automation.activity'
    # the children waiting for an event of an activity, read at every click
    _event_children_cache = Cache(
        'marketing.automation.activity.event_children', context=False)

    name = fields.Char("Name", required=True, translate=True)
    parent = fields.Reference(
        "Parent", selection=[
            ('marketing.automation.scenario', "Scenario"),
            ('marketing.automation.activity', "Activity"),
            ], required=True)
    children = fields.One2Many(
        'marketing.automation.activity', 'parent', "Children")
    # required: every activity has one, and __access__ wants it known
    scenario = fields.Function(
        fields.Many2One(
            'marketing.automation.scenario', "Scenario", required=True),
        'get_scenario', searcher='search_scenario')
    parent_action = fields.Function(
        fields.Selection('get_actions', "Parent Action"),
        'on_change_with_parent_action')
    on = fields.Function(fields.Selection([
                (None, ""),
                ], "On",
            help="The event after which the activity is run."),
        'get_on', setter='set_on')
    event = fields.Selection([
            (None, ""),
            ], "Event")
    negative = fields.Boolean(
        "Negative",
        states={
            'invisible': ~Eval('event'),
            },
        help="Check to run the activity when the event has not happened "
        "by the end of the delay.")
    condition = fields.Char(
        "Condition",
        help="A PYSON statement evaluated with the record as 'self'.\n"
        "The activity runs only when it is true.")
    delay = fields.TimeDelta(
        "Delay",
        domain=['OR',
            ('delay', '=', None),
            ('delay', '>=', datetime.timedelta()),
            ],
        states={
            'required': Bool(Eval('negative')),
            },
        help="How long to wait before running the activity.")
    action = fields.Selection([
            (None, ""),
            ], "Action")
    record_count = fields.Function(
        fields.Integer("Records"), 'get_record_count')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.parent, Index.Equality())))
        # the rights and the rules of the scenario are the activity's
        cls.__access__.add('scenario')
        cls._event_kinds = []
        cls._buttons.update({
                'resume': {
                    'invisible': ~Eval('error'),
                    'depends': ['error'],
                    },
                })

    @classmethod
    def __post_setup__(cls):
        # the actions have added their events by now
        with_events = list(cls._parent_action_events())
        cls.on.domain = [
            If(Eval('parent_action', '').in_(with_events),
                (),
                ('on', '=', None)),
            ]
        cls.on.states = {
            'invisible': ~Eval('parent_action', '').in_(with_events),
            }
        super().__post_setup__()

    @classmethod
    def declare_event(cls, kind):
        """Declare the EventKind that an action produces: the selections of
        the children's event and on, and the checks, derive from it"""
        cls._event_kinds.append(kind)
        cls.event.selection.append((kind.name, kind.label))
        cls.on.selection.extend([
                (kind.name, kind.label),
                (kind.name + '_not', kind.negative_label),
                ])

    @classmethod
    def event_kinds(cls):
        "The EventKinds declared, in order"
        return list(cls._event_kinds)

    @classmethod
    def _parent_action_events(cls):
        """The events that each action produces, as {action: [event, …]}

        The children of an activity wait for the events of its action."""
        events = defaultdict(list)
        for kind in cls._event_kinds:
            events[kind.action].append(kind.name)
        return dict(events)

    @classmethod
    @ModelView.button
    def resume(cls, activities):
        "Run the paused activities again at the next process"
        cls.clear_faults([a.id for a in activities])

    @classmethod
    def on_modification(cls, mode, activities, field_names=None):
        super().on_modification(mode, activities, field_names=field_names)
        cls._event_children_cache.clear()

    @classmethod
    def event_children(cls, activity_id):
        """The children of the activity that wait for one of its events, as
        (child id, event, negative, delay) tuples"""
        children = cls._event_children_cache.get(activity_id)
        if children is None:
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            parent = '%s,%s' % (cls.__name__, activity_id)
            cursor.execute(*table.select(
                    table.id, table.event, table.negative, table.delay,
                    where=(table.parent == parent) & (table.event != Null)))
            children = []
            for child_id, event, negative, delay in cursor:
                if delay is not None and not isinstance(
                        delay, datetime.timedelta):
                    delay = datetime.timedelta(seconds=delay)
                children.append((child_id, event, bool(negative), delay))
            cls._event_children_cache.set(activity_id, children)
        return children

    @classmethod
    def get_actions(cls):
        return cls.fields_get(['action'])['action']['selection']

    @fields.depends('parent')
    def on_change_with_parent_action(self, name=None):
        if isinstance(self.parent, Activity):
            return self.parent.action

    def get_on(self, name):
        if self.event:
            return self.event + ('_not' if self.negative else '')

    @classmethod
    def set_on(cls, activities, name, value):
        if value:
            event, negative = value.removesuffix('_not'), value.endswith(
                '_not')
        else:
            event, negative = None, False
        cls.write(activities, {'event': event, 'negative': negative})

    @fields.depends('on')
    def on_change_on(self):
        if self.on:
            self.event = self.on.removesuffix('_not')
            self.negative = self.on.endswith('_not')
        else:
            self.event, self.negative = None, False

    @classmethod
    def default_negative(cls):
        return False

    @classmethod
    def default_parent_action(cls):
        return None

    def get_scenario(self, name):
        parent = self.parent
        while isinstance(parent, Activity):
            parent = parent.parent
        return parent.id if parent else None

    @classmethod
    def search_scenario(cls, name, clause):
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        _, operator, value = clause[:3]
        nested = clause[0][len(name) + 1:]
        if operator == 'where':
            domain = value
        elif nested:
            domain = [(nested, *clause[1:])]
        elif isinstance(value, str) or (
                isinstance(value, (list, tuple))
                and any(isinstance(v, str) for v in value)):
            domain = [('rec_name', *clause[1:])]
        else:
            domain = [('id', *clause[1:])]
        scenarios = Scenario.search(domain, order=[], query=True)
        tree = cls.scenario_tree()
        return [('id', 'in', tree.select(
                    tree.activity, where=tree.scenario.in_(scenarios),
                    with_=[tree]))]

    @classmethod
    def scenario_tree(cls):
        """The recursive WITH query of every activity and its scenario
        (columns activity and scenario), down the trees from their roots"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        root = cls.__table__()
        child = cls.__table__()
        database = Transaction().database
        scenario_prefix = Scenario.__name__ + ','
        activity_prefix = cls.__name__ + ','
        tree = With('activity', 'scenario', recursive=True)
        tree.query = Union(
            root.select(
                root.id,
                Cast(Substring(root.parent, len(scenario_prefix) + 1),
                    database.sql_type('INTEGER').base),
                where=Like(root.parent, scenario_prefix + '%')),
            child.join(tree, condition=child.parent == Concat(
                    activity_prefix,
                    Cast(tree.activity, database.sql_type('VARCHAR').base))
                ).select(child.id, tree.scenario),
            all_=True)
        return tree

    @classmethod
    def _authored_fields(cls):
        return super()._authored_fields() | {'condition'}

    def as_author(self):
        """Run the block with the rights of the author of the activity, in
        the company of its scenario: its condition and its action read what
        the author may read"""
        user_id = acting_user(self.author)
        return acting_as(user_id, self.scenario.author_context(user_id))

    @property
    def twins(self):
        "The sibling activities waiting for the same event, other polarity"
        if not self.event or not isinstance(self.parent, Activity):
            return []
        return [a for a in self.parent.children
            if a.event == self.event and a.negative != self.negative]

    def get_rec_name(self, name):
        return self.name

    @classmethod
    def validate_fields(cls, activities, field_names):
        super().validate_fields(activities, field_names)
        authored = field_names is None or not cls._authored_fields(
            ).isdisjoint(field_names)
        for activity in activities:
            activity.check_event()
            activity.check_delay()
            activity.check_condition()
            if authored:
                activity.check_condition_access()
            if activity.action:
                check = getattr(
                    activity, 'check_action_%s' % activity.action, None)
                if check:
                    check(field_names)

    def check_event(self):
        if self.event or self.negative:
            parent_action = (
                self.parent.action if isinstance(self.parent, Activity)
                else None)
            if self.event not in self._parent_action_events().get(
                    parent_action, []):
                raise ActivityError(gettext(
                        'marketing_automation.msg_activity_invalid_event',
                        activity=self.rec_name))

    def check_delay(self):
        if self.delay is not None and self.delay < datetime.timedelta():
            raise ActivityError(gettext(
                    'marketing_automation.msg_activity_invalid_delay',
                    activity=self.rec_name))
        if self.negative and not self.delay:
            raise ActivityError(gettext(
                    'marketing_automation.msg_activity_negative_no_delay',
                    activity=self.rec_name))

    def check_condition(self):
        if not self.condition:
            return
        try:
            PYSONDecoder(noeval=True).decode(self.condition)
        except Exception as exception:
            raise ConditionError(gettext(
                    'marketing_automation.msg_activity_invalid_condition',
                    condition=self.condition, activity=self.rec_name,
                    exception=exception)) from exception

    def check_condition_access(self):
        """Refuse a condition that reads a field of the records that its
        author may not read"""
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        FieldAccess = pool.get('ir.model.field.access')
        if not self.condition:
            return
        model = self.scenario.model
        Model = pool.get(model)
        names = [n for n in fields_read(self.condition) if n in Model._fields]
        try:
            with self.as_author():
                ModelAccess.check(model, 'read')
                FieldAccess.check(model, names, 'read')
        except AccessError as exception:
            raise ConditionError(gettext(
                    'marketing_automation.msg_activity_invalid_condition',
                    condition=self.condition, activity=self.rec_name,
                    exception=exception.message)) from exception

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
                            results[record] = _condition_holds(
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
        run = Run(kwargs=kwargs)
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

    @classmethod
    def get_record_count(cls, activities, name):
        "The number of done entries of each activity"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        counts = {a.id: 0 for a in activities}
        for sub in grouped_slice(activities, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record_activity.select(
                    record_activity.activity, Count(),
                    where=reduce_ids(
                        record_activity.activity, [a.id for a in sub])
                    & (record_activity.state == 'done'),
                    group_by=[record_activity.activity]))
            counts.update(cursor)
        return counts

    @classmethod
    def get_trend(cls, activities, names):
        pool = Pool()
        Reporting = pool.get('marketing.automation.reporting.activity')
        starts, period = tools.trend_periods()
        rates = {n: n[:-len('_trend')] for n in names}
        series = Reporting.series(
            'activity', [a.id for a in activities], list(rates.values()),
            period, starts[0])
        return {
            name: {
                a: mailing.sparkline([
                        rows[d][rate] if d in rows else 0 for d in starts])
                for a, rows in series.items()}
            for name, rate in rates.items()}


class Record(ModelSQL, ModelView):
    __name__ = 'marketing.automation.record'

    scenario = fields.Many2One(
        'marketing.automation.scenario', "Scenario",
        required=True, ondelete='CASCADE')
    record = fields.Reference(
        "Record", selection='get_models', required=True)
    blocked = fields.Boolean(
        "Blocked",
        states={
            'readonly': ~Eval('blocked', False),
            },
        help="A blocked record runs no more activity.")
    uuid = fields.Char("UUID", readonly=True, required=True, strip=False)
    converted_date = fields.DateTime(
        "Converted", readonly=True,
        help="When the record reached the goal of the scenario and left "
        "it.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('scenario_record_unique', Unique(t, t.scenario, t.record),
                'marketing_automation.msg_record_scenario_unique'),
            ('uuid_unique', Unique(t, t.uuid),
                'marketing_automation.msg_record_uuid_unique'),
            ]
        cls.__access__.add('scenario')
        cls._buttons.update({
                'block': {
                    'invisible': Eval('blocked', False),
                    'depends': ['blocked'],
                    },
                })

    @classmethod
    def get_models(cls):
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        return Scenario.get_models()

    @classmethod
    def default_uuid(cls):
        return uuid.uuid4().hex

    @classmethod
    def create(cls, vlist):
        # the default is computed once for all the records of a call
        vlist = [dict(v) for v in vlist]
        for values in vlist:
            if not values.get('uuid'):
                values['uuid'] = cls.default_uuid()
        return super().create(vlist)

    @classmethod
    def default_blocked(cls):
        return False

    def get_rec_name(self, name):
        if self.record and self.record.id >= 0:
            try:
                return self.record.rec_name
            except Exception:
                pass
        return self.uuid

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('uuid',) + tuple(clause[1:])]

    @property
    def marketing_party(self):
        "The party who receives the emails, or None if the record is gone"
        if self.record and self.record.id >= 0:
            try:
                return self.record.marketing_party
            except Exception:
                return None

    @property
    def language(self):
        """The code of the recipient's language: the emails of the record
        are in it (read for each record when a module overrides it)"""
        party = self.marketing_party
        if party and party.lang:
            return party.lang.code

    def eval(self, expression):
        """The value of the PYSON expression (a condition) for the record,
        its underlying record as self; fields that the user may not read
        are errors (the engine calls it with the rights of the author of
        the condition, for each record when a module overrides it)"""
        return _evaluate(expression, self.record)

    @classmethod
    def copy(cls, records, default=None):
        default = default.copy() if default else {}
        default.setdefault('uuid', lambda data: cls.default_uuid())
        default.setdefault('blocked', False)
        default.setdefault('converted_date', None)
        return super().copy(records, default=default)

    @classmethod
    def convert(cls, ids):
        "Mark converted now the records of ids not converted yet"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = tools.now()
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.converted_date], [now],
                    where=reduce_ids(table.id, list(sub))
                    & (table.converted_date == Null)))

    @classmethod
    @ModelView.button
    def block(cls, records):
        """Block the records (they run no more activity) and unsubscribe
        their parties from the unsubscribable scenarios; the unsubscribe
        links call it too"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Scenario.unsubscribe(records)


class RecordActivity(Workflow, ModelSQL, ModelView):
    """The entry of a record into an activity: the unit of work of the engine

    One due entry goes down these steps, each below the other:

    1. ``process`` (the cron) finds the due entries and queues ``do``;
    2. ``do`` takes them, locked, and for each activity contains the work of
       ``Activity.advance`` (condition, action, children), so that the fault
       of one activity leaves its entries waiting and the others go on;
    3. ``set_done`` marks them done, but those whose action finishes later,
       which the action completes with ``complete``.

    The events of the actions (``on_events``) make the children waiting for
    them due."""
    __name__ = 'marketing.automation.record.activity'

    record = fields.Many2One(
        'marketing.automation.record', "Record",
        required=True, ondelete='CASCADE')
    activity = fields.Many2One(
        'marketing.automation.activity', "Activity",
        required=True, ondelete='CASCADE')
    activity_action = fields.Function(
        fields.Selection('get_activity_actions', "Activity Action"),
        'on_change_with_activity_action')
    at = fields.DateTime(
        "At", states={
            'readonly': Eval('state') != 'waiting',
            },
        help="When the activity is due, or when it was done.")
    error = fields.Text(
        "Error", readonly=True,
        states={
            'invisible': ~Eval('error'),
            },
        help="Why the action was not done.")
    state = fields.Selection([
            ('waiting', "Waiting"),
            ('done', "Done"),
            ('cancelled', "Cancelled"),
            ], "State", required=True, readonly=True, sort=False)

    _waiting_states = {
        'invisible': ~Eval('waiting_for') | (Eval('state') != 'waiting'),
        }
    waiting_for = fields.Selection([
            (None, ""),
            ], "Waiting For", readonly=True, states=_waiting_states,
        help="Why the entry waits although it is due.")
    waiting_since = fields.DateTime(
        "Waiting Since", readonly=True, states=_waiting_states)
    waiting_until = fields.DateTime(
        "Waiting Until", readonly=True, states=_waiting_states,
        help="When the entry is due again.")
    del _waiting_states

    # The gates that due entries pass, in order (see gates.py): one line
    GATES = ['outbox', 'goal', 'event', 'window', 'cap']

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # the entries held back, counted on the scenarios and activities
        cls._sql_indexes.add(Index(t,
                (t.activity, Index.Equality()),
                (t.waiting_until, Index.Range()),
                where=(t.state == 'waiting') & (t.waiting_for != Null)))
        cls._sql_constraints += [
            ('activity_record_unique', Unique(t, t.activity, t.record),
                'marketing_automation.msg_activity_record_unique'),
            ]
        # one way to the scenario: the rules of two would be OR-ed
        cls.__access__.add('record')
        cls._sql_indexes.update({
                Index(t, (t.record, Index.Equality())),
                Index(t,
                    (t.at, Index.Range()),
                    where=t.state == 'waiting'),
                })
        cls._order.insert(0, ('at', 'DESC NULLS FIRST'))
        cls._transitions |= {
            ('waiting', 'done'),
            ('waiting', 'cancelled'),
            }

    @classmethod
    def __post_setup__(cls):
        super().__post_setup__()
        for gate in cls.ordered_gates():
            if gate.label and (gate.name, gate.label) not in (
                    cls.waiting_for.selection):
                cls.waiting_for.selection.append((gate.name, gate.label))

    @classmethod
    def gates(cls):
        """The Gate classes, by name: a feature adds its own; they are
        asked in the order of GATES, then those it does not name"""
        return {}

    @classmethod
    def ordered_gates(cls):
        gates = cls.gates()
        names = [n for n in cls.GATES if n in gates] + sorted(
            n for n in gates if n not in cls.GATES)
        return [gates[n] for n in names]

    @classmethod
    def get_activity_actions(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        return Activity.fields_get(['action'])['action']['selection']

    @fields.depends('activity', '_parent_activity.action')
    def on_change_with_activity_action(self, name=None):
        if self.activity:
            return self.activity.action

    @classmethod
    def default_state(cls):
        return 'waiting'

    def get_rec_name(self, name):
        return '%s @ %s' % (self.activity.rec_name, self.record.rec_name)

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause[:3]
        bool_op = 'AND' if operator.startswith('!') or operator.startswith(
            'not ') else 'OR'
        return [bool_op,
            ('activity.rec_name', operator, value),
            ('record.rec_name', operator, value),
            ]

    @classmethod
    def _new_values(cls):
        """The values of the columns of the actions in a new entry, as
        {column name: value}: the engine inserts the entries with SQL"""
        return {}

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
    def in_progress(cls, table):
        """The SQL condition that the action of an entry of table has not
        finished yet (an email on its way to the mail server): such an entry
        is not due again"""
        return Literal(False)

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
