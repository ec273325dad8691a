# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenarios, their activities, their records and the entries of the records
into the activities: the four models, their fields, views, checks and
statistics.

The engine that moves the records through them extends these models in
``engine.py``; ``Entry``, ``EventKind``, ``Outcome`` and ``Waiting`` are
named here too.
"""
import datetime
import logging
import uuid
from collections import defaultdict

from sql import Cast, Literal, Null, Union, With
from sql.aggregate import Count, Sum
from sql.conditionals import Case, Coalesce, NullIf
from sql.functions import Substring
from sql.operators import Concat, Like

from trytond import backend
from trytond.cache import Cache
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import PYSON, Bool, Eval, If, PYSONDecoder
# The tests written for Tryton's own module keep their emails from leaving by
# replacing these two names of this file: the outbox honours them (see
# smtp.smtp_server).
from trytond.sendmail import (  # noqa: F401
    SMTPDataManager, send_message_transactional)
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import mailing, tools
# the tuples of the engine, named here too for the modules that extend it
from .engine import Entry, EventKind, Outcome, Waiting, evaluate  # noqa: F401
from .exceptions import ActivityError, ConditionError, DomainError
from .mixin import MarketingAutomationMixin
from .tools import acting_as, acting_user, savepoint

logger = logging.getLogger(__name__)


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
        return evaluate(expression, self.record)

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
    def in_progress(cls, table):
        """The SQL condition that the action of an entry of table has not
        finished yet (an email on its way to the mail server): such an entry
        is not due again"""
        return Literal(False)
