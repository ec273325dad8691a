# SPDX-License-Identifier: GPL-3.0-or-later
"""The walls between companies and the rights of marketers.

Two companies, A and B, share the parties; each has its sales.  Mary is a
marketer of company A alone, Adam an administrator (and marketer) of both
at once, Tom a user of no group.  The company rules are on, and the
administrator denied the code of the parties to the Marketing group.
They log in over JSON-RPC, as the Tryton client does; the crons run as on
a real site and a real SMTP server receives the emails.

Whatever a scenario does on behalf of a marketer runs with the rights of
the user who last wrote it, in the company of the scenario: what Mary may
not read or search over RPC, no scenario of hers counts, tests, reads,
enters or mails.
"""
import datetime as dt
import logging
from decimal import Decimal

from trytond.modules.company.tests import create_company
from trytond.modules.currency.tests import add_currency_rate, create_currency
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from .tools import (
    RPCError, SendingTestMixin, Session, clicked_entry, committed,
    confirm_sale, create_parties, encode, inspecting, parse_message)

LOGGER = 'trytond.modules.marketing_automation'
SCENARIO = 'marketing.automation.scenario'
ACTIVITY = 'marketing.automation.activity'
PASSWORDS = {
    'mary': 'Hx3&nB8*tR5^yJ1%',
    'adam': 'Fd6!sW9#cE2@uM7$',
    'tom': 'Qv7#mZ2@pL9$wK4!',
    }


def decimal(value):
    "A Decimal as JSON-RPC sends it"
    return Decimal(value['decimal'])


def email(name, template):
    return {
        'name': name,
        'action': 'send_email',
        'email_title': name,
        'email_template': template,
        }


class Client(Session):
    "A user of the Tryton client: each call carries their preferences"

    def __init__(self, login):
        super().__init__(login, PASSWORDS[login])
        self.context = self.call('model.res.user.get_preferences', True, {})

    def model(self, name, method, *params, context=None):
        return self.call(
            f'model.{name}.{method}', *params,
            {**self.context, **(context or {})})

    def read(self, name, ids, fields, context=None):
        return self.model(name, 'read', ids, fields, context=context)

    def create_scenario(self, values, run=False):
        "Create the scenario of values (run it with run), return its id"
        scenario_id, = self.model(SCENARIO, 'create', [values])
        if run:
            self.model(SCENARIO, 'run', [scenario_id])
        return scenario_id


class CompanyWallsTestCase(SendingTestMixin, TestCase):
    "A marketer of company A learns nothing of company B, nor more than RPC"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module(['marketing_automation', 'sale'])
        with committed(user=0):
            pool = Pool()
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            FieldAccess = pool.get('ir.model.field.access')
            usd = create_currency('USD')
            add_currency_rate(usd, Decimal(1))
            eur = create_currency('EUR')
            add_currency_rate(eur, Decimal(1))
            company_a = create_company("Shop A", currency=usd)
            company_b = create_company("Shop B", currency=eur)
            cls.company_a, cls.company_b = company_a.id, company_b.id
            marketing = ModelData.get_id('marketing', 'group_marketing')
            admin = ModelData.get_id('res', 'group_admin')
            sale = ModelData.get_id('sale', 'group_sale')
            mary, adam, tom = User.create([{
                        'name': "Mary Marketer",
                        'login': 'mary',
                        'password': PASSWORDS['mary'],
                        'groups': [('add', [marketing])],
                        'companies': [('add', [company_a.id])],
                        'company': company_a.id,
                        }, {
                        'name': "Adam Administrator",
                        'login': 'adam',
                        'password': PASSWORDS['adam'],
                        'groups': [('add', [admin, marketing, sale])],
                        'companies': [
                            ('add', [company_a.id, company_b.id])],
                        'company': company_a.id,
                        # his rules see both companies at once
                        'company_filter': 'all',
                        }, {
                        'name': "Tom Outsider",
                        'login': 'tom',
                        'password': PASSWORDS['tom'],
                        'companies': [('add', [company_a.id])],
                        'company': company_a.id,
                        }])
            cls.mary, cls.adam, cls.tom = mary.id, adam.id, tom.id
            # the code of the parties is the administrators' alone
            FieldAccess.create([{
                        'model': 'party.party',
                        'field': 'code',
                        'group': marketing,
                        'perm_read': False,
                        }, {
                        'model': 'party.party',
                        'field': 'code',
                        'group': admin,
                        'perm_read': True,
                        }])

    def setUp(self):
        super().setUp()
        self.start_sending()
        self.mary_client = Client('mary')
        self.adam_client = Client('adam')

    def code(self, name):
        return '%s-%s' % (name.upper(), self._testMethodName)

    def address(self, name):
        return '%s.%s@example.com' % (name.lower(), self._testMethodName)

    def create_sales(self, *sales):
        """The sales of (company id, party id, description), in draft;
        return their ids"""
        with committed():
            pool = Pool()
            Sale = pool.get('sale.sale')
            Company = pool.get('company.company')
            Party = pool.get('party.party')
            ids = []
            for company_id, party_id, description in sales:
                company = Company(company_id)
                party = Party(party_id)
                sale, = Sale.create([{
                            'company': company.id,
                            'currency': company.currency.id,
                            'party': party.id,
                            'invoice_address': party.addresses[0].id,
                            'description': description,
                            }])
                ids.append(sale.id)
            return ids

    def received(self):
        "The messages received, by recipient address"
        return {
            rcpt: parse_message(m.data)
            for m in self.smtp.received() for rcpt in m.rcpt_tos}

    def entries(self, scenario_id):
        "The state and error of the entries of the scenario, by record"
        with inspecting():
            RecordActivity = Pool().get(
                'marketing.automation.record.activity')
            return {
                str(e.record.record): (e.state, e.error)
                for e in RecordActivity.search([
                        ('record.scenario', '=', scenario_id)])}

    def assertRefused(self, call, *args, **kwargs):
        "Assert that the call answers an error, return its message"
        with self.assertRaises(RPCError) as raised:
            call(*args, **kwargs)
        kind, (message, *_) = raised.exception.args
        self.assertEqual(kind, 'UserError')
        return message

    # The rules

    def test_scenario_of_other_company_hidden(self):
        """A marketer of company A finds nothing of a scenario of company
        B: neither the scenario nor its activities, records, entries,
        reporting or logged emails; its administrator does"""
        ann, = create_parties(
            "Ann", code=self.code, email=self.address, postal_address=True)
        scenario = self.adam_client.create_scenario({
                'name': "Spring at B",
                'company': self.company_b,
                'domain': encode([('id', '=', ann)]),
                'activities': [('create', [email("Hello", '<p>Hi</p>')])],
                }, run=True)
        self.run_crons()
        self.assertEqual(list(self.received()), [self.address("Ann")])
        context = {'period': 'month'}
        searches = [
            (SCENARIO, [('id', '=', scenario)]),
            (ACTIVITY, [('scenario', '=', scenario)]),
            ('marketing.automation.record', [('scenario', '=', scenario)]),
            ('marketing.automation.record.activity',
                [('record.scenario', '=', scenario)]),
            ('marketing.automation.reporting.scenario',
                [('scenario', '=', scenario)]),
            ('marketing.automation.reporting.activity',
                [('activity.scenario', '=', scenario)]),
            ('ir.email', [
                    ('marketing_automation_activity.scenario', '=',
                        scenario)]),
            ]
        for model, domain in searches:
            with self.subTest(model=model):
                self.assertEqual(self.mary_client.model(
                        model, 'search_count', domain, context=context), 0)
                self.assertEqual(self.adam_client.model(
                        model, 'search_count', domain, context=context), 1)
        self.assertRefused(
            self.mary_client.read, SCENARIO, [scenario], ['name'])

    # Templates

    def test_rewritten_template_reads_as_its_author(self):
        """A marketer of company A who rewrites the template of an activity
        that an administrator created reads company B's sales through it
        no more than over RPC"""
        ann, bob = create_parties(
            "Ann", "Bob",
            code=self.code, email=self.address, postal_address=True)
        self.create_sales(
            (self.company_a, ann, "Chairs for Ann at A"),
            (self.company_b, ann, "Secret order of Ann at B"),
            (self.company_a, bob, "Tables for Bob at A"))
        template = (
            '<p py:for="sale in record.marketing_sales">'
            '${sale.description}</p>')
        scenario = self.adam_client.create_scenario({
                'name': "Orders",
                'domain': encode([('id', 'in', [ann, bob])]),
                'activities': [('create', [email("Orders", template)])],
                }, run=True)
        activity, = self.adam_client.read(
            SCENARIO, [scenario], ['activities'])[0]['activities']

        self.mary_client.model(ACTIVITY, 'write', [activity], {
                'email_template': '<p>Your orders:</p>' + template,
                })
        self.run_crons()

        # the sale of company B is left out of Ann's list, as if it did not
        # exist
        received = self.received()
        self.assertEqual(
            sorted(received), [self.address("Ann"), self.address("Bob")])
        for name, sales in [
                ("Ann", ["Chairs for Ann at A"]),
                ("Bob", ["Tables for Bob at A"])]:
            html = received[self.address(name)].get_body(
                ('html',)).get_content()
            for sale in sales:
                self.assertIn(sale, html)
        for message in received.values():
            self.assertNotIn(b"Secret order", message.as_bytes())
        state, error = self.entries(scenario)['party.party,%s' % ann]
        self.assertEqual((state, error), ('done', None))
        # Mary's own search does not find the sale either
        self.assertEqual(self.mary_client.model(
                'sale.sale', 'search_count',
                [('description', '=', "Secret order of Ann at B")]), 0)

    # Domains and counts

    def test_draft_count_of_other_company(self):
        """A draft scenario of company A that selects company B's sales
        shows the marketer of company A no count of them, as their own
        search"""
        ann, = create_parties(
            "Ann", code=self.code, email=self.address, postal_address=True)
        self.create_sales(
            (self.company_b, ann, "B1"), (self.company_b, ann, "B2"),
            (self.company_a, ann, "A1"))
        domain = [('company', '=', self.company_b)]
        with inspecting():
            Sale = Pool().get('sale.sale')
            self.assertGreaterEqual(Sale.search_count(domain), 2)

        for client in [self.mary_client, self.adam_client]:
            with self.subTest(author=client.user_id):
                scenario = client.create_scenario({
                        'name': "Company B's buyers",
                        'model': 'sale.sale',
                        'domain': encode(domain),
                        })
                values, = self.mary_client.read(
                    SCENARIO, [scenario],
                    ['record_count', 'audience_selected'])
                self.assertEqual(values['record_count'], 0)
                self.assertEqual(values['audience_selected'], 0)
                # a count, not a refusal
                values, = self.mary_client.read(
                    SCENARIO, [scenario], ['audience_error'])
                self.assertIsNone(values['audience_error'])
        self.assertEqual(
            self.mary_client.model('sale.sale', 'search_count', domain), 0)

    def test_parties_by_sales_of_other_company(self):
        """A domain on parties through their sales finds them by the sales
        of the marketer's company alone, over RPC as in a scenario"""
        ann, bob = create_parties(
            "Ann", "Bob",
            code=self.code, email=self.address, postal_address=True)
        self.create_sales(
            (self.company_b, ann, "Only at B"),
            (self.company_a, bob, "Only at A"))
        for description, found in [("Only at B", []), ("Only at A", [bob])]:
            with self.subTest(sale=description):
                domain = [
                    ('id', 'in', [ann, bob]),
                    ('marketing_sales', 'where', [
                            ('description', '=', description)]),
                    ]
                self.assertEqual(self.mary_client.model(
                        'party.party', 'search', domain), found)
                scenario = self.mary_client.create_scenario({
                        'name': "Buyers", 'domain': encode(domain)})
                values, = self.mary_client.read(
                    SCENARIO, [scenario], ['record_count'])
                self.assertEqual(values['record_count'], len(found))

    def test_denied_field_not_guessed_by_count(self):
        """A domain on a field that the marketer may not read is refused on
        save, and a count of it is refused, never shown"""
        ann, = create_parties(
            "Ann", code=self.code, email=self.address, postal_address=True)
        domain = encode([('code', '=', self.code("Ann")), ('id', '=', ann)])
        message = self.assertRefused(
            self.mary_client.create_scenario, {
                'name': "Guess", 'domain': domain})
        self.assertIn("Guess", message)
        self.assertIn("not valid", message)

        # written by the administrator, it counts with his rights
        scenario = self.adam_client.create_scenario({
                'name': "Guess", 'domain': domain})
        values, = self.mary_client.read(
            SCENARIO, [scenario], ['record_count', 'audience_error'])
        self.assertEqual(
            values, {'id': scenario, 'record_count': 1,
                'audience_error': None})

        # the administrator's rights change: the count is refused
        with committed(user=0):
            pool = Pool()
            FieldAccess = pool.get('ir.model.field.access')
            ModelData = pool.get('ir.model.data')
            admin_code, = FieldAccess.search([
                    ('model', '=', 'party.party'),
                    ('field', '=', 'code'),
                    ('group', '=', ModelData.get_id('res', 'group_admin')),
                    ])
            FieldAccess.write([admin_code], {'perm_read': False})
        try:
            values, = self.mary_client.read(
                SCENARIO, [scenario], ['record_count', 'audience_error'])
        finally:
            with committed(user=0):
                FieldAccess = Pool().get('ir.model.field.access')
                FieldAccess.write(
                    [FieldAccess(admin_code.id)], {'perm_read': True})
        self.assertIsNone(values['record_count'])
        self.assertIn("Adam Administrator", values['audience_error'])
        self.assertIn("Code", values['audience_error'])

    def test_denied_field_not_guessed_by_condition(self):
        """A condition on a field that the marketer may not read is refused
        on save, and fails for every record when it runs: no record is told
        from another"""
        ann, bob = create_parties(
            "Ann", "Bob",
            code=self.code, email=self.address, postal_address=True)
        guess = encode(Eval('self.code') == self.code("Ann"))
        for condition in [
                guess,
                encode(Eval('self', {}).get('code') == self.code("Ann")),
                ]:
            with self.subTest(condition=condition):
                message = self.assertRefused(
                    self.mary_client.create_scenario, {
                        'name': "Guess",
                        'domain': encode([('id', 'in', [ann, bob])]),
                        'activities': [('create', [{
                                        **email("Hello", '<p>Hello</p>'),
                                        'condition': condition,
                                        }])],
                        })
                self.assertIn("condition", message)

        # saved before the checks existed, it fails for both
        scenario = self.mary_client.create_scenario({
                'name': "Guess",
                'domain': encode([('id', 'in', [ann, bob])]),
                'activities': [('create', [{
                                **email("Hello", '<p>Hello</p>'),
                                'condition': encode(
                                    Eval('self.name') == 'Ann'),
                                }])],
                }, run=True)
        with committed():
            Activity = Pool().get(ACTIVITY)
            table = Activity.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.condition], [guess],
                    where=table.parent == '%s,%s' % (SCENARIO, scenario)))
        with self.assertLogs(LOGGER, logging.ERROR):
            self.run_crons()

        self.assertEqual(self.received(), {})
        # the activity stops, both entries wait alike
        self.assertEqual(
            list(self.entries(scenario).values()), [('waiting', None)] * 2)
        with inspecting():
            Activity = Pool().get(ACTIVITY)
            activity, = Activity.search([
                    ('parent', '=', '%s,%s' % (SCENARIO, scenario)),
                    ])
            self.assertIn("Code", activity.error)

    # The crons

    def test_trigger_enters_own_company_sales(self):
        """The trigger never enters company B's sales into a scenario of
        company A, whoever wrote it, and no email goes to B's customer"""
        ann, bob = create_parties(
            "Ann", "Bob",
            code=self.code, email=self.address, postal_address=True)
        sale_a, sale_b = self.create_sales(
            (self.company_a, ann, "A1"), (self.company_b, bob, "B1"))
        for client in [self.mary_client, self.adam_client]:
            with self.subTest(author=client.user_id):
                self.smtp.clear()
                scenario = client.create_scenario({
                        'name': "After sale",
                        'model': 'sale.sale',
                        'domain': encode([('id', 'in', [sale_a, sale_b])]),
                        'activities': [('create', [
                                    email("Thanks", '<p>Thank you</p>')])],
                        }, run=True)
                self.run_crons()

                self.assertEqual(
                    list(self.entries(scenario)), ['sale.sale,%s' % sale_a])
                self.assertEqual(
                    list(self.received()), [self.address("Ann")])

    # Revenue

    def test_revenue_of_the_scenario_company(self):
        """The revenue of a scenario of company A is A's, whatever company
        the context names: the marketer of A reads nothing of B's sales"""
        ann, = create_parties(
            "Ann", code=self.code, email=self.address, postal_address=True)
        with committed():
            pool = Pool()
            Company = pool.get('company.company')
            Party = pool.get('party.party')
            company_a, company_b = Company.browse(
                [self.company_a, self.company_b])
            party = Party(ann)
            scenario = clicked_entry(
                party, dt.datetime.now() - dt.timedelta(hours=1),
                company_a).id
            with Transaction().set_context(company=company_a.id):
                confirm_sale(company_a, party, '100.00')
            with Transaction().set_context(company=company_b.id):
                confirm_sale(company_b, party, '30.00')
        names = ['sale_count', 'revenue', 'currency']
        context = {'company': self.company_b, 'period': 'month'}

        values, = self.mary_client.read(
            SCENARIO, [scenario], names, context=context)
        self.assertEqual(
            (values['sale_count'], decimal(values['revenue']),
                values['currency']),
            (1, Decimal('100.00'), self.usd()))
        rows = self.mary_client.model(
            'marketing.automation.reporting.scenario', 'search_read',
            [('scenario', '=', scenario)], 0, None, None, names,
            context=context)
        self.assertEqual(
            [(r['sale_count'], decimal(r['revenue']), r['currency'])
                for r in rows],
            [(1, Decimal('100.00'), self.usd())])

    def usd(self):
        with inspecting():
            Currency = Pool().get('currency.currency')
            currency, = Currency.search([('code', '=', 'USD')])
            return currency.id

    # The audience

    def test_audience_for_marketers_only(self):
        """A user of no group learns nothing through marketing_audience,
        and a marketer nothing of another company's scenario"""
        ann, bob = create_parties(
            "Ann", "Bob",
            code=self.code, email=self.address, postal_address=True)
        domain = encode([('id', 'in', [ann, bob])])
        unsubscribed = [('marketing_audience', '=', 'unsubscribed')]

        def unsubscribed_scenario(**values):
            scenario = self.adam_client.create_scenario({
                    'name': "Spring", 'domain': domain,
                    'unsubscribable': True, **values})
            with committed():
                Unsubscribed = Pool().get(
                    'party.party-unsubscribed-marketing.automation.scenario')
                Unsubscribed.create([{'party': ann, 'scenario': scenario}])
            return scenario

        scenario_a = unsubscribed_scenario()
        tom = Client('tom')
        context = {'marketing_scenario': scenario_a}
        self.assertRefused(
            tom.read, 'party.party', [ann, bob], ['marketing_audience'],
            context=context)
        self.assertRefused(
            tom.model, 'party.party', 'search', unsubscribed,
            context=context)
        self.assertRefused(
            tom.model, 'party.party', 'search_count',
            [('marketing_audience', '!=', None)], context=context)
        scenario_b = unsubscribed_scenario(company=self.company_b)

        def audience(scenario):
            context = {'marketing_scenario': scenario}
            return (
                [r['marketing_audience'] for r in self.mary_client.read(
                        'party.party', [ann, bob], ['marketing_audience'],
                        context=context)],
                self.mary_client.model(
                    'party.party', 'search', unsubscribed, context=context))

        self.assertEqual(
            audience(scenario_a), (['unsubscribed', 'reachable'], [ann]))
        self.assertEqual(audience(scenario_b), ([None, None], []))
