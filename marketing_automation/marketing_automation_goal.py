# SPDX-License-Identifier: GPL-3.0-or-later
"""Goals: what a scenario is for, and the records that reached it.

A scenario may have a goal, a PYSON domain on its model.  A record that
meets it is converted (``Record.converted_date``) and leaves the scenario:
its waiting entries are cancelled with the reason, and its emails still in
the outbox are dropped, so that nothing more is sent to it.

The goal sees the date on which the record entered the scenario as
``Eval('entry_date')``.  The crons check it set-based, never one search per
record:

- the trigger checks the records still in the scenario (those with a waiting
  entry), with one search per day of entry, or one search in all when the
  goal does not use that date (``Scenario.reach_goal``);
- before the due entries of a batch are done, the goal's gate
  (``GoalGate``, the first of the engine's gates) checks the records of
  the batch the same way (``Record.goals_met``) and settles the entries of
  those converted: the engine converts the records and takes them out, so
  that a record converted since the last trigger gets no email.

A goal that fails under the cron is its scenario's fault: the scenario shows
the error, its due entries wait, and the other scenarios go on.
"""
import datetime
from collections import defaultdict

from sql import Cast, Literal, Null
from sql.aggregate import Count, Sum
from sql.conditionals import Case
from sql.functions import DateTrunc
from sql.operators import Concat, Exists

from trytond import backend
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import PYSONDecoder
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import tools
from .exceptions import DomainError
from .gates import LEAVE, Gate, Verdict
from .marketing_automation_reporting import percent, rate
from .tools import contained

# Two days to tell whether a goal uses the date of entry
_PROBE_DAYS = (datetime.date(2000, 1, 1), datetime.date(2000, 1, 2))


def _day_range(column, day):
    "The SQL condition that the time of column falls on day"
    start = datetime.datetime.combine(day, datetime.time())
    return (column >= start) & (
        column < start + datetime.timedelta(days=1))


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    goal = fields.Char(
        "Goal",
        help="A PYSON domain on the model that a record meets once the "
        "scenario achieved what it is for: the record is then converted "
        "and leaves the scenario.\n"
        "Eval('entry_date') is the date the record entered the scenario.")
    record_count_converted = fields.Function(
        fields.Integer(
            "Records Converted",
            help="The records that reached the goal."),
        'get_conversion')
    conversion_rate = fields.Function(
        fields.Float(
            "Conversion Rate", digits=(1, 2),
            help="The records converted per record entered."),
        'get_conversion')
    conversion_rate_trend = fields.Function(
        fields.Char("Conversion Rate Trend"), 'get_trend')

    @classmethod
    def validate_fields(cls, scenarios, field_names):
        super().validate_fields(scenarios, field_names)
        if field_names is None or field_names & {'goal', 'model'}:
            for scenario in scenarios:
                scenario.check_goal()

    @classmethod
    def _authored_fields(cls):
        return super()._authored_fields() | {'goal'}

    def decoded_goal(self, entry_date):
        """The goal as a domain for the records that entered the scenario
        on entry_date"""
        environment = tools.eval_environment()
        environment['entry_date'] = entry_date
        goal = PYSONDecoder(environment).decode(self.goal)
        if not isinstance(goal, list):
            raise ValueError("a domain is a list of clauses")
        return goal

    def goal_uses_entry_date(self):
        "Whether the goal depends on the date of entry of the records"
        return self.decoded_goal(_PROBE_DAYS[0]) != self.decoded_goal(
            _PROBE_DAYS[1])

    def check_goal(self):
        """Refuse a goal that is not a domain on the model that its author
        may search"""
        if not self.goal:
            return
        Model = Pool().get(self.model)

        def search(goal):
            with self.as_author():
                Model.search(goal, limit=1, order=[])
        try:
            goal = self.decoded_goal(datetime.date.today())
        except Exception as exception:
            error = exception
        else:
            error = contained(search, goal)
        if error is not None:
            raise DomainError(gettext(
                    'marketing_automation.msg_scenario_invalid_goal',
                    goal=self.goal, scenario=self.rec_name,
                    exception=error)) from error

    def goal_fault(self, exception):
        "The message of a goal that cannot be checked"
        return gettext(
            'marketing_automation.msg_scenario_goal_fault',
            scenario=self.rec_name, error=tools.describe(exception))

    @classmethod
    def get_conversion(cls, scenarios, names):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        cursor = Transaction().connection.cursor()
        counts = {s.id: (0, 0) for s in scenarios}
        for sub in grouped_slice(scenarios, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record.select(
                    record.scenario, Count(),
                    Sum(Case((record.converted_date != Null, 1), else_=0)),
                    where=reduce_ids(record.scenario, [s.id for s in sub]),
                    group_by=[record.scenario]))
            for scenario_id, count, converted in cursor:
                counts[scenario_id] = (count, converted or 0)
        result = {n: {} for n in names}
        for scenario in scenarios:
            count, converted = counts[scenario.id]
            if 'record_count_converted' in result:
                result['record_count_converted'][scenario.id] = converted
            if 'conversion_rate' in result:
                # as the block rate: a draft scenario previews its audience
                result['conversion_rate'][scenario.id] = (
                    0. if scenario.state == 'draft'
                    else tools.round_rate(converted, count))
        return result

    def enter_records(self):
        super().enter_records()
        if self.goal:
            self.reach_goal()

    def reach_goal(self):
        """Convert the records still in the scenario that meet its goal and
        take them out of it

        A record is still in the scenario while it has a waiting entry and
        is not blocked."""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        record = Record.__table__()
        entry = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        now = tools.now()
        still_in = ((record.scenario == self.id)
            & (record.converted_date == Null)
            & (record.blocked == Literal(False))
            & Exists(entry.select(
                    Literal(1),
                    where=(entry.record == record.id)
                    & (entry.state == 'waiting'))))
        try:
            if self.goal_uses_entry_date():
                day = DateTrunc('day', record.create_date)
                cursor.execute(*record.select(
                        day, where=still_in, distinct=True))
                days = sorted({tools.as_date(d) for d, in cursor})
            else:
                days = [None]
            for day in days:
                where = still_in
                if day is not None:
                    where &= _day_range(record.create_date, day)
                cursor.execute(*record.update(
                        [record.converted_date], [now],
                        where=where & record.record.in_(
                            self._goal_references(day))))
        except backend.DatabaseOperationalError:
            raise
        except Exception as exception:
            raise DomainError(self.goal_fault(exception)) from exception
        RecordActivity.leave(lambda table: table.record.in_(record.select(
                    record.id,
                    where=(record.scenario == self.id)
                    & (record.converted_date != Null))))

    def _goal_references(self, entry_date):
        """The query of the references of the records of the model that
        meet the goal for the records entered on entry_date (None when the
        goal does not use it)"""
        pool = Pool()
        Model = pool.get(self.model)
        database = Transaction().database
        with self.as_author():
            goal = Model.search(
                self.decoded_goal(entry_date or datetime.date.today()),
                order=[], query=True)
        return goal.select(Concat(
                self.model + ',',
                Cast(goal.id, database.sql_type('VARCHAR').base)))

    def records_meeting_goal(self, records):
        """The ids of the records that meet the goal, among records: (id,
        reference, create date) of records of the scenario

        One search per day of entry, or one in all when the goal does not
        use it."""
        Model = Pool().get(self.model)
        uses_entry_date = self.goal_uses_entry_date()
        groups = defaultdict(dict)
        for record_id, reference, entered in records:
            day = tools.as_date(entered) if uses_entry_date else None
            groups[day][int(reference.split(',')[1])] = record_id
        met = set()
        for day, record_of in groups.items():
            goal = self.decoded_goal(day or datetime.date.today())
            for sub in grouped_slice(
                    list(record_of), backend.MAX_QUERY_PARAMS):
                with self.as_author():
                    met.update(record_of[r.id] for r in Model.search(
                            [goal, ('id', 'in', list(sub))], order=[]))
        return met


class Record(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record'

    @classmethod
    def goals_met(cls, ids):
        """Which records of ids met the goal of their scenario, read only:
        the ids of those converted, before or now, those whose goal could
        not be checked, and the fault of the scenario of these
        ({scenario id: (message, exception)})"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        table = cls.__table__()
        scenario = Scenario.__table__()
        cursor = Transaction().connection.cursor()
        converted, to_check = set(), defaultdict(list)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(
                    scenario, condition=table.scenario == scenario.id).select(
                    table.id, table.scenario, table.record,
                    table.create_date, table.converted_date, scenario.goal,
                    where=reduce_ids(table.id, list(sub))))
            for (record_id, scenario_id, reference, entered, converted_date,
                    goal) in cursor:
                if converted_date:
                    converted.add(record_id)
                elif goal:
                    to_check[scenario_id].append(
                        (record_id, reference, entered))
        unchecked, faults = defaultdict(set), {}
        for scenario in Scenario.browse(list(to_check)):
            records = to_check[scenario.id]
            exception = contained(
                lambda: converted.update(
                    scenario.records_meeting_goal(records)))
            if exception is not None:
                unchecked[scenario.id].update(r for r, _, _ in records)
                faults[scenario.id] = (
                    scenario.goal_fault(exception), exception)
        return converted, unchecked, faults


class GoalGate(Gate):
    """Settles the entries of the records that reached the goal of their
    scenario: they leave it"""
    name = 'goal'

    def judge(self, entries):
        Record = Pool().get('marketing.automation.record')
        verdict = Verdict()
        converted, unchecked, faults = Record.goals_met(
            {e.record for e in entries})
        error = gettext(
            'marketing_automation.msg_record_activity_goal_reached')
        for entry in entries:
            if entry.record in converted:
                verdict.settle(entry.id, LEAVE, error)
        for scenario_id, record_ids in unchecked.items():
            message, exception = faults[scenario_id]
            verdict.stop(
                [e.id for e in entries if e.record in record_ids],
                'marketing.automation.scenario', scenario_id, message,
                exception)
        return verdict


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    @classmethod
    def gates(cls):
        return {**super().gates(), GoalGate.name: GoalGate}


class ReportingScenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.scenario'

    record_count_converted = fields.Integer(
        "Records Converted",
        help="Those of the records that reached the goal.")
    conversion_rate = fields.Float("Conversion Rate", digits=(1, 2))
    conversion_rate_percent = percent("Conversion Rate (%)")

    @classmethod
    def _columns(cls, tables, withs):
        record = tables['record']
        converted = Sum(Case((record.converted_date != Null, 1), else_=0))
        return super()._columns(tables, withs) + [
            converted.as_('record_count_converted'),
            rate(converted, Count()).as_('conversion_rate'),
            ]
