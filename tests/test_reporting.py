# SPDX-License-Identifier: GPL-3.0-or-later
"""The numbers a marketer reads: the reporting per period, the statistics of
the activities and the scenarios, and their trends.

The entries are written as the engine leaves them, without sending
anything: done, with their email sent or not (and why not), opened and
clicked, at dates in different months."""
import datetime as dt

from dateutil.relativedelta import relativedelta

from trytond.pool import Pool
from trytond.tests.test_tryton import (
    TestCase, activate_module, drop_db, with_transaction)
from trytond.transaction import Transaction

from .tools import (
    EMAIL, THIS_MONTH, at, create_entries, create_records,
    create_running_scenario, reporting, sent)

NO_ADDRESS = "The party has no email address."
LAST_MONTH = THIS_MONTH - relativedelta(months=1)


def set_create_date(records, date):
    "Make records look created at date"
    Record = Pool().get('marketing.automation.record')
    table = Record.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.update(
            [table.create_date], [date],
            where=table.id.in_([r.id for r in records])))


def not_sent(error=NO_ADDRESS, month=THIS_MONTH, **flags):
    return {'email_sent': False, 'error': error, 'at': at(month), **flags}


def only(rows):
    row, = rows
    return row


class ReportingTestCase(TestCase):
    "Reporting of the scenarios and the activities"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def email_activity(self, **values):
        scenario = create_running_scenario(
            [{'name': "Email", **EMAIL, **values}])
        activity, = scenario.activities
        return activity

    def assertRow(self, row, **expected):
        self.assertEqual(
            {k: row[k] for k in expected}, expected, msg=row)

    @with_transaction()
    def test_not_sent_not_counted(self):
        """An entry whose action did not run is done but not sent, and it
        says why"""
        activity = self.email_activity()
        *_, skipped = create_entries(
            activity, sent(), sent(), not_sent())

        self.assertEqual(skipped.state, 'done')
        self.assertFalse(skipped.email_sent)
        self.assertEqual(skipped.error, NO_ADDRESS)
        self.assertRow(only(reporting('activity')),
            activity=activity.id, record_count=3, email_sent=2)
        self.assertEqual(
            (activity.record_count, activity.email_sent), (3, 2))

    @with_transaction()
    def test_events_only_count_sent_emails(self):
        """Opens and clicks of an entry whose email was not sent (as a
        button pressed by hand can set them) are not counted"""
        activity = self.email_activity()
        create_entries(
            activity, sent(opened=True), sent(),
            not_sent(email_opened=True),
            not_sent(email_opened=True, email_clicked=True))

        self.assertRow(only(reporting('activity')),
            record_count=4, email_sent=2, email_opened=1, email_clicked=0)
        self.assertEqual(
            (activity.email_opened, activity.email_clicked), (1, 0))

    @with_transaction()
    def test_rates_over_sent_emails(self):
        "The rates are over the emails sent, not over the entries"
        activity = self.email_activity()
        create_entries(
            activity,
            sent(clicked=True), sent(opened=True), sent(), sent(),
            not_sent(), not_sent(error="Condition is false"))

        rates = {
            'email_open_rate': 0.5,
            'email_click_rate': 0.25,
            'email_click_through_rate': 0.5,
            }
        self.assertRow(only(reporting('activity')),
            record_count=6, email_sent=4, email_opened=2, email_clicked=1,
            **rates)
        for name, rate in rates.items():
            self.assertEqual(getattr(activity, name), rate, msg=name)

    @with_transaction()
    def test_rounded_to_two_decimals(self):
        "The rates are rounded to 2 decimals"
        activity = self.email_activity()
        create_entries(activity, sent(clicked=True), sent(), sent())

        self.assertRow(only(reporting('activity')),
            email_open_rate=0.33, email_click_rate=0.33,
            email_click_through_rate=1)

    @with_transaction()
    def test_graphs_in_percent(self):
        """The graphs of the rates show percents, as the forms and the lists
        do, not fractions of one"""
        pool = Pool()
        Reporting = pool.get('marketing.automation.reporting.activity')
        ModelData = pool.get('ir.model.data')
        activity = self.email_activity()
        create_entries(activity, sent(clicked=True), sent(), sent())

        self.assertRow(only(reporting('activity')),
            email_open_rate_percent=33, email_click_rate_percent=33,
            email_click_through_rate_percent=100)
        self.assertRow(only(reporting('scenario')),
            block_rate_percent=0, conversion_rate_percent=0)
        graph = Reporting.fields_view_get(view_id=ModelData.get_id(
                'marketing_automation', 'reporting_activity_view_graph_rate'))
        for name in ['email_open_rate', 'email_click_rate',
                'email_click_through_rate']:
            self.assertIn(f'"{name}_percent"', graph['arch'])
            self.assertNotIn(f'"{name}"', graph['arch'])

    @with_transaction()
    def test_sort_by_rates(self):
        "The reporting lists sort by their rates, computed by the database"
        Reporting = Pool().get('marketing.automation.reporting.activity')
        rates = {}
        for name, opened in [("Low", 1), ("High", 3), ("Middle", 2)]:
            activity = self.email_activity(name=name)
            create_entries(
                activity, *[sent(opened=i < opened) for i in range(4)])
            rates[activity.id] = opened / 4
        with Transaction().set_context(period='month'):
            for direction, expected in [
                    ('DESC', [0.75, 0.5, 0.25]), ('ASC', [0.25, 0.5, 0.75])]:
                rows = Reporting.search(
                    [('activity', 'in', list(rates))],
                    order=[('email_open_rate', direction)])
                self.assertEqual(
                    [r.email_open_rate for r in rows], expected)
                self.assertEqual(
                    [rates[r.activity.id] for r in rows], expected)

    @with_transaction()
    def test_nothing_sent_zero_rates(self):
        "An activity or a scenario with nothing sent has rates of 0"
        activity = self.email_activity()
        empty = self.email_activity(name="Never run")
        create_entries(activity, not_sent(), not_sent())
        names = [
            'email_open_rate', 'email_click_rate',
            'email_click_through_rate']

        row = only(reporting('activity'))
        for name in names:
            with self.subTest(name=name):
                self.assertEqual(row[name], 0)
                self.assertIsNotNone(row[name])
                self.assertEqual(getattr(activity, name), 0)
                self.assertEqual(getattr(empty, name), 0)
                self.assertEqual(
                    getattr(activity, name + '_trend'), '▁' * 10)
        self.assertEqual(empty.parent.block_rate, 0)
        self.assertEqual(
            reporting('activity', [('activity', '=', empty.id)]), [])

    @with_transaction()
    def test_other_actions(self):
        "An activity without email counts its entries with no email"
        scenario = create_running_scenario([{'name': "Wait"}])
        activity, = scenario.activities
        create_entries(activity, {}, {})

        self.assertRow(only(reporting('activity')),
            activity_action=None, record_count=2, email_sent=0,
            email_opened=0, email_open_rate=0)

    @with_transaction()
    def test_only_done_entries(self):
        "Waiting and cancelled entries are not counted"
        activity = self.email_activity()
        create_entries(
            activity, sent(),
            {'state': 'waiting', 'at': at(THIS_MONTH)},
            {'state': 'cancelled', 'at': at(THIS_MONTH)})

        self.assertRow(only(reporting('activity')),
            record_count=1, email_sent=1)
        self.assertEqual(activity.record_count, 1)

    @with_transaction()
    def test_click_through_rate_at_most_one(self):
        """A click counts as an open, even when the open was not recorded
        (as older databases may hold), so the click-through rate never
        exceeds 1"""
        activity = self.email_activity()
        create_entries(
            activity,
            {**sent(), 'email_clicked': True},
            {**sent(), 'email_clicked': True},
            sent(opened=True), sent())

        row = only(reporting('activity'))
        self.assertRow(row,
            email_opened=3, email_clicked=2, email_click_through_rate=0.67)
        self.assertLessEqual(row['email_click_through_rate'], 1)
        self.assertEqual(activity.email_opened, 3)
        self.assertEqual(activity.email_click_through_rate, 0.67)

    @with_transaction()
    def test_per_period(self):
        "Each period has its row, at the start of the period"
        activity = self.email_activity()
        create_entries(
            activity,
            sent(clicked=True, month=LAST_MONTH), sent(month=LAST_MONTH),
            not_sent(month=LAST_MONTH),
            sent(opened=True), not_sent())

        last, this = reporting('activity')
        self.assertRow(last,
            date=LAST_MONTH, record_count=3, email_sent=2, email_opened=1,
            email_clicked=1, email_open_rate=0.5, email_click_rate=0.5,
            email_click_through_rate=1)
        self.assertRow(this,
            date=THIS_MONTH, record_count=2, email_sent=1, email_opened=1,
            email_clicked=0, email_open_rate=1, email_click_rate=0,
            email_click_through_rate=0)

        by_day = reporting('activity', period='day')
        self.assertEqual(
            [r['date'] for r in by_day],
            [LAST_MONTH.replace(day=2), THIS_MONTH.replace(day=2)])
        by_year = reporting('activity', period='year')
        self.assertEqual(
            [r['date'] for r in by_year],
            sorted({m.replace(month=1) for m in [LAST_MONTH, THIS_MONTH]}))
        self.assertEqual(sum(r['record_count'] for r in by_year), 5)

    @with_transaction()
    def test_row_ids(self):
        """Every row of an activity or a scenario and a period has its own
        id, which reads the same row again"""
        pool = Pool()
        Reporting = pool.get('marketing.automation.reporting.activity')
        first = self.email_activity()
        second = self.email_activity(name="Other")
        for activity in [first, second]:
            create_entries(
                activity, sent(month=LAST_MONTH), sent(), sent(opened=True))

        rows = reporting('activity')
        self.assertEqual(len(rows), 4)
        self.assertEqual(len({r['id'] for r in rows}), 4)
        self.assertEqual(
            len({(r['activity'], r['date']) for r in rows}), 4)
        with Transaction().set_context(period='month'):
            for row in rows:
                again = Reporting(row['id'])
                self.assertEqual(
                    (again.activity.id, again.date, again.email_opened),
                    (row['activity'], row['date'], row['email_opened']))

        scenario_rows = reporting('scenario')
        self.assertEqual(len({r['id'] for r in scenario_rows}), 2)

    @with_transaction()
    def test_context_dates(self):
        "Only what happened between the dates of the context is counted"
        activity = self.email_activity()
        create_entries(
            activity, sent(month=LAST_MONTH),
            {**sent(), 'at': at(THIS_MONTH, day=1)},
            {**sent(opened=True), 'at': at(THIS_MONTH, day=3)})

        self.assertRow(only(reporting('activity', from_date=THIS_MONTH)),
            date=THIS_MONTH, email_sent=2, email_opened=1)
        # The last day counts whole: the entry at noon of the first day of
        # this month is in.
        last, this = reporting('activity', to_date=THIS_MONTH)
        self.assertRow(last, date=LAST_MONTH, email_sent=1)
        self.assertRow(this, date=THIS_MONTH, email_sent=1, email_opened=0)
        self.assertRow(
            only(reporting('activity',
                    from_date=THIS_MONTH, to_date=THIS_MONTH)),
            date=THIS_MONTH, email_sent=1, email_opened=0)
        self.assertEqual(
            reporting('activity',
                from_date=LAST_MONTH + dt.timedelta(days=2),
                to_date=THIS_MONTH - dt.timedelta(days=1)),
            [])

    @with_transaction()
    def test_context_defaults(self):
        "By default the reporting shows the last 12 months by month"
        pool = Pool()
        Context = pool.get('marketing.automation.reporting.context')
        Date = pool.get('ir.date')
        today = Date.today()

        values = Context.default_get(['from_date', 'to_date', 'period'])

        self.assertEqual(values, {
                'from_date': (
                    today.replace(day=1) - relativedelta(months=11)),
                'to_date': today,
                'period': 'month',
                })

    @with_transaction()
    def test_scenario(self):
        "The records of a scenario per period of their entry, and blocked"
        scenario = create_running_scenario([{'name': "Email", **EMAIL}])
        old = create_records(scenario, 4, blocked=1)
        set_create_date(old, at(LAST_MONTH))
        create_records(scenario, 2)
        other = create_running_scenario([], name="Other")
        create_records(other, 2, blocked=2)

        last, this = reporting('scenario', [('scenario', '=', scenario)])
        self.assertRow(last,
            date=LAST_MONTH, record_count=4, record_count_blocked=1,
            block_rate=0.25)
        self.assertRow(this,
            date=THIS_MONTH, record_count=2, record_count_blocked=0,
            block_rate=0)
        self.assertRow(
            only(reporting('scenario', [('scenario', '=', other)])),
            record_count=2, record_count_blocked=2, block_rate=1)
        self.assertEqual(
            (scenario.record_count, scenario.record_count_blocked,
                scenario.block_rate),
            (6, 1, 0.17))
        self.assertEqual(
            only(reporting('scenario', [('scenario', '=', scenario)],
                    from_date=THIS_MONTH))['record_count'],
            2)

    @with_transaction()
    def test_statistics_agree_with_reporting(self):
        """The statistics of an activity are the totals of its reporting
        over all periods"""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        activity = self.email_activity()
        create_entries(
            activity,
            sent(clicked=True, month=LAST_MONTH), sent(month=LAST_MONTH),
            not_sent(month=LAST_MONTH),
            *[sent(opened=True)] * 3, sent(clicked=True), sent(),
            {**sent(), 'email_clicked': True}, not_sent(email_opened=True))
        # A fresh instance reads the statistics again.
        activity = Activity(activity.id)

        rows = reporting('activity', [('activity', '=', activity)])
        self.assertEqual(len(rows), 2)
        totals = {
            name: sum(r[name] for r in rows)
            for name in [
                'record_count', 'email_sent', 'email_opened',
                'email_clicked']}
        self.assertEqual(totals, {
                'record_count': 10,
                'email_sent': 8,
                'email_opened': 6,
                'email_clicked': 3,
                })
        for name, total in totals.items():
            self.assertEqual(getattr(activity, name), total, msg=name)
        self.assertEqual(
            (activity.email_open_rate, activity.email_click_rate,
                activity.email_click_through_rate),
            (0.75, 0.38, 0.5))

    @with_transaction()
    def test_trends(self):
        """The trends are sparklines of the last 10 periods of the rates
        the reporting gives"""
        activity = self.email_activity()
        create_entries(
            activity,
            sent(opened=True, month=LAST_MONTH), sent(month=LAST_MONTH),
            sent(clicked=True), sent(clicked=True))
        scenario = activity.parent
        old = create_records(scenario, 2, blocked=2)
        set_create_date(old, at(LAST_MONTH))

        rows = reporting('activity')
        self.assertEqual(
            [r['email_open_rate'] for r in rows], [0.5, 1])
        self.assertEqual(activity.email_open_rate_trend, '▁' * 8 + '▅█')
        self.assertEqual(activity.email_click_rate_trend, '▁' * 9 + '█')
        self.assertEqual(
            activity.email_click_through_rate_trend, '▁' * 9 + '█')
        # Last month the 2 old records, both blocked; this month the
        # records of the entries.
        self.assertEqual(scenario.block_rate_trend, '▁' * 8 + '█▁')
        for trend in [
                activity.email_open_rate_trend,
                activity.email_click_rate_trend,
                activity.email_click_through_rate_trend,
                scenario.block_rate_trend]:
            self.assertEqual(len(trend), 10)

    @with_transaction()
    def test_trends_by_period(self):
        "The trends follow the period of the context"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        activity = self.email_activity()
        now = dt.datetime.now().replace(microsecond=0)
        create_entries(
            activity, sent(opened=True, month=LAST_MONTH),
            {**sent(), 'at': now - dt.timedelta(days=1)},
            {**sent(opened=True), 'at': now.replace(hour=0, minute=0)})

        with Transaction().set_context(period='year'):
            activity = Activity(activity.id)
            if LAST_MONTH.year == THIS_MONTH.year:
                # 2 opened of 3
                expected = '▁' * 9 + '█'
            else:
                # 1 of 1 last year, 1 of 2 this year
                expected = '▁' * 8 + '█▅'
            self.assertEqual(activity.email_open_rate_trend, expected)
        with Transaction().set_context(period='day'):
            activity = Activity(activity.id)
            self.assertEqual(
                activity.email_open_rate_trend, '▁' * 8 + '▁█')
