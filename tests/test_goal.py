# SPDX-License-Identifier: GPL-3.0-or-later
"""Goals and revenue: the edges that the scenarios of the docs leave out.

A goal that is not a domain is refused on save; one that fails under the
crons stops its scenario only, and its entries wait; a record whose
underlying record was deleted is not converted; the goal sees the day each
record entered; the check costs the same few statements whatever the size
of the batch.  The revenue of a scenario is that of its company, in its
currency, and a sale without a rate counts without an amount.
"""
import datetime as dt
import logging
import uuid
from decimal import Decimal

from trytond.modules.company.tests import create_company, set_company
from trytond.modules.currency.tests import add_currency_rate, create_currency
from trytond.modules.marketing_automation.exceptions import DomainError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tests.test_tryton import (
    TestCase, activate_module, drop_db, with_transaction)
from trytond.transaction import Transaction

from .tools import (
    SendingTestMixin, clicked_entry, committed, confirm_sale, create_parties,
    encode, inspecting, without_company)

LOGGER = 'trytond.modules.marketing_automation'
BOUGHT = ['confirmed', 'processing', 'done']


def email(name, **values):
    return {
        'name': name,
        'action': 'send_email',
        'email_title': name,
        'email_template': '<p>%s: hello ${record.name}</p>' % name,
        **values,
        }


class GoalTestCase(SendingTestMixin, TestCase):
    "The goal of a scenario under the crons"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module(['marketing_automation', 'sale'])
        with committed():
            cls.company_id = create_company().id

    def setUp(self):
        super().setUp()
        self.start_sending()

    def start_scenario(self, party_ids, goal, activities, name="Spring"):
        return self.running_scenario(
            '%s %s' % (name, self._testMethodName),
            [('id', 'in', party_ids)], activities,
            goal=encode(goal) if goal is not None else None,
            company=self.company_id)

    def store_goal(self, scenario_id, goal):
        "Write the goal straight into the table, as the checks never saw it"
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            table = Scenario.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.goal], [encode(goal)],
                    where=table.id == scenario_id))

    def make_due(self, scenario_id):
        "Make the waiting entries of the scenario due"
        with committed():
            pool = Pool()
            RecordActivity = pool.get('marketing.automation.record.activity')
            due = dt.datetime.now() - dt.timedelta(minutes=1)
            RecordActivity.write(RecordActivity.search([
                        ('record.scenario', '=', scenario_id),
                        ('state', '=', 'waiting'),
                        ]), {'at': due})

    def entries(self, scenario_id):
        "The (party name, activity, state, error) of the entries, sorted"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return sorted(
            (e.record.record.name.split()[0], e.activity.name, e.state,
                e.error)
            for e in RecordActivity.search([
                    ('record.scenario', '=', scenario_id)]))

    def received_by(self):
        return sorted(r for m in self.smtp.received() for r in m.rcpt_tos)

    def test_invalid_goal_refused(self):
        "A goal that is not a domain of the model is refused on save"
        for goal in [
                '[("no_such_field", "=", 1)]',
                'not pyson',
                '{"a": 1}',
                ]:
            with self.subTest(goal=goal):
                with committed():
                    Scenario = Pool().get('marketing.automation.scenario')
                    with self.assertRaises(DomainError) as raised:
                        Scenario.create([{
                                    'name': "Broken goal",
                                    'company': self.company_id,
                                    'goal': goal,
                                    }])
                    Transaction().rollback()
                message = raised.exception.message
                self.assertIn(goal, message)
                self.assertIn("Broken goal", message)
                self.assertIn("goal", message.lower())

    def test_goal_fault_in_trigger(self):
        """A goal that fails under the trigger stops its scenario and shows
        why; the other scenario enters and converts its records"""
        ann, bob = create_parties(
            "Ann", "Bob", suffix=self._testMethodName, postal_address=True)
        broken = self.start_scenario(
            [ann], [('name', '!=', None)], [email("Broken")], name="Broken")
        fine = self.start_scenario(
            [bob], [('name', '!=', None)], [email("Fine")], name="Fine")
        self.store_goal(broken, [('no_such_field', '=', 1)])

        with self.assertLogs(LOGGER, logging.ERROR):
            self.trigger()

        with inspecting():
            Scenario = Pool().get('marketing.automation.scenario')
            broken_scenario, fine_scenario = Scenario.browse([broken, fine])
            self.assertIn("no_such_field", broken_scenario.error)
            self.assertIn("goal", broken_scenario.error)
            self.assertEqual(broken_scenario.record_count, 0)
            self.assertIsNone(fine_scenario.error)
            self.assertEqual(fine_scenario.record_count_converted, 1)

    def test_goal_fault_in_process(self):
        """A goal that fails when the entries are due holds them, with the
        error on the scenario, until it is mended"""
        ann, bob = create_parties(
            "Ann", "Bob", suffix=self._testMethodName, postal_address=True)
        broken = self.start_scenario(
            [ann], [('name', '=', 'Nobody')], [email("Broken")],
            name="Broken")
        self.start_scenario(
            [bob], [('name', '=', 'Nobody')], [email("Fine")], name="Fine")
        self.trigger()
        self.store_goal(broken, [('no_such_field', '=', 1)])

        with self.assertLogs(LOGGER, logging.ERROR):
            self.process()

        self.assertEqual(self.received_by(), ['bob@example.com'])
        with inspecting():
            Scenario = Pool().get('marketing.automation.scenario')
            self.assertIn("no_such_field", Scenario(broken).error)
            self.assertEqual(
                [e[2] for e in self.entries(broken)], ['waiting'])

        # mended, the held entry goes
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.write([Scenario(broken)], {
                    'goal': encode([('name', '=', 'Nobody')]),
                    })
        self.process()
        self.assertEqual(
            self.received_by(), ['ann@example.com', 'bob@example.com'])

    def test_deleted_record_not_converted(self):
        "A record whose party was deleted is neither converted nor counted"
        ann, bob = create_parties(
            "Ann", "Bob", suffix=self._testMethodName, postal_address=True)
        scenario = self.start_scenario(
            [ann, bob], None, [email("Welcome", delay=dt.timedelta(days=1))])
        self.trigger()
        with inspecting():
            Record = Pool().get('marketing.automation.record')
            ann_record, bob_record = [
                Record.search([('record', '=', 'party.party,%s' % p)])[0].id
                for p in [ann, bob]]
        with committed():
            pool = Pool()
            Party = pool.get('party.party')
            Scenario = pool.get('marketing.automation.scenario')
            Party.delete([Party(bob)])
            Scenario.write([Scenario(scenario)], {
                    'goal': encode([('active', 'in', [True, False])]),
                    })
        self.trigger()

        def states():
            RecordActivity = Pool().get(
                'marketing.automation.record.activity')
            return sorted(
                (e.record.id, e.state) for e in RecordActivity.search(
                    [('record.scenario', '=', scenario)]))

        with inspecting():
            Scenario = Pool().get('marketing.automation.scenario')
            Record = Pool().get('marketing.automation.record')
            self.assertEqual(
                Scenario(scenario).record_count_converted, 1)
            converted = Record.search([
                    ('scenario', '=', scenario),
                    ('converted_date', '!=', None),
                    ])
            self.assertEqual([r.id for r in converted], [ann_record])
            self.assertEqual(states(), sorted([
                        (ann_record, 'cancelled'), (bob_record, 'waiting')]))

        # its entry is done with the engine's error, and nothing is sent
        self.make_due(scenario)
        self.process()
        self.assertEqual(self.received_by(), [])
        with inspecting():
            self.assertEqual(states(), sorted([
                        (ann_record, 'cancelled'), (bob_record, 'done')]))

    def test_entry_date(self):
        """The goal compares with the day each record entered: one entered
        before the sale converts, one entered after it does not"""
        ann, bob = create_parties(
            "Ann", "Bob", suffix=self._testMethodName, postal_address=True)
        with committed():
            pool = Pool()
            Sale = pool.get('sale.sale')
            Party = pool.get('party.party')
            Company = pool.get('company.company')
            company = Company(self.company_id)
            with set_company(company):
                sales = Sale.create([{
                            'party': p,
                            'company': company.id,
                            'currency': company.currency.id,
                            'invoice_method': 'manual',
                            'shipment_method': 'manual',
                            'invoice_address': Party(p).addresses[0].id,
                            'sale_date': dt.date.today() - dt.timedelta(
                                days=5),
                            } for p in [ann, bob]])
                Sale.write(sales, {'state': 'confirmed'})
        scenario = self.start_scenario(
            [ann, bob], [('marketing_sales', 'where', [
                        ('state', 'in', BOUGHT),
                        ('sale_date', '>=', Eval('entry_date')),
                        ])],
            [email("Welcome", delay=dt.timedelta(days=1))])
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
            # Ann entered ten days ago, before her sale
            Record = Pool().get('marketing.automation.record')
            table = Record.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.create_date],
                    [dt.datetime.now() - dt.timedelta(days=10)],
                    where=table.record == 'party.party,%s' % ann))
        self.trigger()

        with inspecting():
            self.assertEqual(self.entries(scenario), [
                    ("Ann", "Welcome", 'cancelled',
                        "Goal reached: the record left the scenario."),
                    ("Bob", "Welcome", 'waiting', None),
                    ])

    def test_statements_per_batch(self):
        "The goal check of a batch costs the same statements at any size"
        names = ["Party%s" % i for i in range(300)]
        parties = create_parties(
            *names, suffix=self._testMethodName, postal_address=True)
        scenario = self.start_scenario(
            parties, None, [email("Welcome", delay=dt.timedelta(days=1))])
        self.trigger()
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.write([Scenario(scenario)], {
                    'goal': encode([('name', 'like', 'Party1%')]),
                    })

        def statements(count):
            with committed():
                Record = Pool().get('marketing.automation.record')
                ids = [r.id for r in Record.search([
                            ('scenario', '=', scenario),
                            ], limit=count, order=[('id', 'ASC')])]
                cursor_class = type(Transaction().connection.cursor())
                executed = []
                original = cursor_class.execute

                def execute(cursor, *args, **kwargs):
                    executed.append(args[0])
                    return original(cursor, *args, **kwargs)
                cursor_class.execute = execute
                try:
                    # what the goal's gate reads, and the engine writes
                    converted, _, _ = Record.goals_met(ids)
                    Record.convert(converted)
                finally:
                    cursor_class.execute = original
                Transaction().rollback()
            return len(executed), len(converted)

        # the caches (the rights of the goal's author, the message of the
        # cancelled entries) are filled once, as in a cron that runs
        statements(20)
        # a batch of the queue holds 200 entries
        small, converted_small = statements(20)
        large, converted_large = statements(200)
        self.assertEqual((converted_small, converted_large), (11, 111))
        self.assertEqual(small, large)
        self.assertLessEqual(large, 10)


class RevenueTestCase(TestCase):
    "The revenue of the scenarios, company by company"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module(['marketing_automation', 'sale'])

    @with_transaction()
    def test_companies(self):
        """The scenario of each company counts the sales of its company, in
        its currency, whatever company the context names, and a sale in
        another currency is converted at the rate of its date"""
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        Reporting = pool.get('marketing.automation.reporting.scenario')
        usd = create_currency('USD')
        add_currency_rate(usd, Decimal(1))
        eur = create_currency('EUR')
        add_currency_rate(eur, Decimal(2))
        us_company = create_company("US Shop", currency=usd)
        eu_company = create_company("EU Shop", currency=eur)
        ann, = Party.create([{'name': "Ann", 'addresses': [('create', [{}])]}])
        clicked = dt.datetime.now() - dt.timedelta(days=1)
        us_scenario = clicked_entry(ann, clicked, us_company)
        eu_scenario = clicked_entry(ann, clicked, eu_company)
        with set_company(us_company):
            confirm_sale(us_company, ann, '100.00')
        with set_company(eu_company):
            # 100 dollars are 200 euros
            confirm_sale(eu_company, ann, '100.00', currency=usd)
            confirm_sale(eu_company, ann, '30.00')

        for company in [us_company, eu_company]:
            with self.subTest(context=company.rec_name), \
                    set_company(company), \
                    Transaction().set_context(period='month'):
                us_scenario, eu_scenario = Scenario.browse(
                    [us_scenario.id, eu_scenario.id])
                self.assertEqual(
                    (us_scenario.sale_count, us_scenario.revenue,
                        us_scenario.currency),
                    (1, Decimal('100.00'), usd))
                self.assertEqual(
                    (eu_scenario.sale_count, eu_scenario.revenue,
                        eu_scenario.currency),
                    (2, Decimal('230.00'), eur))
                row, = Reporting.search([('scenario', '=', eu_scenario.id)])
                self.assertEqual(
                    (row.sale_count, row.revenue, row.currency),
                    (2, Decimal('230.00'), eur))
                # one email sent, to Ann's record
                self.assertEqual(row.revenue_per_email, Decimal('230.00'))

    @with_transaction()
    def test_reporting_per_period(self):
        """The reportings count the revenue of each period: a scenario's
        rows that of the records that entered in it, an activity's that of
        its emails sent in it; every row opens the sales it counts, and the
        lists sort by revenue"""
        pool = Pool()
        Party = pool.get('party.party')
        Sale = pool.get('sale.sale')
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        ReportingScenario = pool.get(
            'marketing.automation.reporting.scenario')
        ReportingActivity = pool.get(
            'marketing.automation.reporting.activity')
        company = create_company()
        ann, bob, cat = Party.create([
                {'name': name, 'addresses': [('create', [{}])]}
                for name in ["Ann", "Bob", "Cat"]])
        reminder = email(
            "Reminder", event='email_opened', negative=True,
            delay=dt.timedelta(days=1))
        scenario, = Scenario.create([{
                    'name': "Spring",
                    'company': company.id,
                    'activities': [('create', [
                                email("Offer", children=[
                                        ('create', [reminder])])])],
                    }])
        offer, = scenario.activities
        reminder, = offer.children
        now = dt.datetime.now().replace(microsecond=0)
        old = now - dt.timedelta(days=70)
        recent = now - dt.timedelta(hours=4)
        record_table = Record.__table__()
        entry_table = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()

        def enter(party, entered, *emails):
            "The record of party, entered at entered, with its emails"
            record, = Record.create([{
                        'scenario': scenario.id,
                        'record': str(party),
                        'uuid': uuid.uuid4().hex,
                        }])
            cursor.execute(*record_table.update(
                    [record_table.create_date], [entered],
                    where=record_table.id == record.id))
            for activity, sent, clicked in emails:
                entry, = RecordActivity.create([{
                            'record': record.id,
                            'activity': activity.id,
                            'state': 'done',
                            'at': sent,
                            'email_sent': True,
                            'email_clicked': bool(clicked),
                            }])
                cursor.execute(*entry_table.update(
                        [entry_table.email_last_clicked], [clicked],
                        where=entry_table.id == entry.id))

        # Ann and Cat entered seventy days ago, Ann clicked the offer two
        # days ago; Bob entered four hours ago and clicked the reminder
        enter(ann, old, (offer, old, now - dt.timedelta(days=2)))
        enter(cat, old, (offer, old, None))
        enter(bob, recent,
            (offer, recent, now - dt.timedelta(hours=3)),
            (reminder, now - dt.timedelta(hours=2),
                now - dt.timedelta(hours=1)))
        with set_company(company):
            ann_sale = confirm_sale(company, ann, '100.00')
            bob_sale = confirm_sale(company, bob, '40.00')
            cancelled = confirm_sale(company, bob, '60.00')
        sale_table = Sale.__table__()
        cursor.execute(*sale_table.update(
                [sale_table.state], ['cancelled'],
                where=sale_table.id == cancelled.id))

        def month(value):
            return value.date().replace(day=1)

        def add(rows, key, **values):
            row = rows.setdefault(key, dict.fromkeys(values, 0))
            for name, value in values.items():
                row[name] += value

        expected_scenario = {}
        add(expected_scenario, month(old), record_count=2, email_sent=2,
            sale_count=1, revenue=Decimal('100.00'))
        add(expected_scenario, month(recent), record_count=1, email_sent=2,
            sale_count=1, revenue=Decimal('40.00'))
        expected_activity = {}
        add(expected_activity, (offer.id, month(old)), email_sent=2,
            sale_count=1, revenue=Decimal('100.00'))
        add(expected_activity, (offer.id, month(recent)), email_sent=1,
            sale_count=0, revenue=Decimal('0.00'))
        add(expected_activity,
            (reminder.id, month(now - dt.timedelta(hours=2))),
            email_sent=1, sale_count=1, revenue=Decimal('40.00'))
        for row in [*expected_scenario.values(), *expected_activity.values()]:
            row['revenue_per_email'] = (
                row['revenue'] / row['email_sent']).quantize(
                Decimal('0.01'))

        context = {
            'period': 'month', 'company': company.id,
            'from_date': month(old), 'to_date': now.date()}
        with Transaction().set_context(context):
            rows = ReportingScenario.search(
                [('scenario', '=', scenario.id)], order=[('date', 'ASC')])
            self.assertEqual({r.date: {
                        'record_count': r.record_count,
                        'email_sent': r.email_sent,
                        'sale_count': r.sale_count,
                        'revenue': r.revenue,
                        'revenue_per_email': r.revenue_per_email,
                        } for r in rows}, expected_scenario)
            self.assertEqual(
                set().union(*(r.attributed_sales() for r in rows)),
                {ann_sale.id, bob_sale.id})
            by_revenue = ReportingScenario.search(
                [], order=[('revenue', 'DESC')])
            self.assertEqual(
                [r.revenue for r in by_revenue],
                sorted((r.revenue for r in rows), reverse=True))

            rows = ReportingActivity.search(
                [('activity', 'in', [offer.id, reminder.id])])
            self.assertEqual({(r.activity.id, r.date): {
                        'email_sent': r.email_sent,
                        'sale_count': r.sale_count,
                        'revenue': r.revenue,
                        'revenue_per_email': r.revenue_per_email,
                        } for r in rows}, expected_activity)
            for row in rows:
                self.assertEqual(
                    len(row.attributed_sales()), row.sale_count)
            by_revenue = ReportingActivity.search(
                [], order=[('revenue', 'DESC'), ('id', 'ASC')])
            self.assertEqual(
                [r.revenue for r in by_revenue],
                sorted((r.revenue for r in rows), reverse=True))

    @with_transaction()
    def test_no_rate(self):
        "A sale whose currency has no rate counts, without an amount"
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        company = create_company()
        gbp = create_currency('GBP')
        ann, = Party.create([{'name': "Ann", 'addresses': [('create', [{}])]}])
        scenario = clicked_entry(
            ann, dt.datetime.now() - dt.timedelta(hours=1), company)
        with set_company(company):
            confirm_sale(company, ann, '50.00', currency=gbp)
            scenario = Scenario(scenario.id)
            self.assertEqual(
                (scenario.sale_count, scenario.revenue),
                (1, Decimal('0.00')))

    @with_transaction()
    def test_click_after_sale(self):
        "A click after the confirmation does not bring the sale"
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        company = create_company()
        ann, = Party.create([{'name': "Ann", 'addresses': [('create', [{}])]}])
        scenario = clicked_entry(
            ann, dt.datetime.now() + dt.timedelta(hours=1), company)
        with set_company(company):
            confirm_sale(company, ann, '50.00')
            self.assertEqual(Scenario(scenario.id).sale_count, 0)

    @with_transaction()
    def test_no_company(self):
        """A scenario without a company (brought by a database of Tryton's
        own module, with several companies to choose from) shows no
        amount"""
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        company = create_company()
        ann, = Party.create([{'name': "Ann", 'addresses': [('create', [{}])]}])
        scenario = clicked_entry(
            ann, dt.datetime.now() - dt.timedelta(hours=1), company)
        with set_company(company):
            confirm_sale(company, ann, '50.00')
        without_company([scenario.id])
        with set_company(company):
            scenario = Scenario(scenario.id)
            self.assertEqual(
                (scenario.sale_count, scenario.revenue, scenario.currency),
                (0, None, None))
