# SPDX-License-Identifier: GPL-3.0-or-later
"""The module with sales: the standard checks of a Tryton module, and
scenarios whose records are sales, sent to the sale's party."""
import logging

from trytond import backend
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.pyson import PYSONEncoder
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction

from .tools import without_company


def create_sales(company, *parties):
    Sale = Pool().get('sale.sale')
    return Sale.create([{
                'company': company.id,
                'currency': company.currency.id,
                'party': p.id,
                } for p in parties])


def sale_scenario(unsubscribable):
    "A running scenario on every sale"
    Scenario = Pool().get('marketing.automation.scenario')
    scenario, = Scenario.create([{
                'name': "After sale",
                'model': 'sale.sale',
                'domain': PYSONEncoder().encode([]),
                'unsubscribable': unsubscribable,
                'activities': [('create', [{'name': "Thanks"}])],
                }])
    Scenario.run([scenario])
    return scenario


def records(scenario):
    "The records of scenario as {sale: blocked}"
    Record = Pool().get('marketing.automation.record')
    return {
        r.record: r.blocked
        for r in Record.search([('scenario', '=', scenario.id)])}


class MarketingAutomationTestCase(ModuleTestCase):
    "Marketing automation with sales"
    module = 'marketing_automation'
    extras = ['sale']

    @with_transaction()
    def test_sale_marketing_party(self):
        "The emails of a sale go to its party"
        pool = Pool()
        Party = pool.get('party.party')
        Sale = pool.get('sale.sale')
        company = create_company()
        ann, bob = Party.create([{'name': "Ann"}, {'name': "Bob"}])
        with set_company(company):
            sale_ann, sale_bob = create_sales(company, ann, bob)

            self.assertEqual(sale_ann.marketing_party, ann)
            self.assertEqual(ann.marketing_party, ann)
            self.assertEqual(
                Sale.search([('marketing_party', '=', bob.id)]), [sale_bob])
            self.assertEqual(
                Sale.search([('marketing_party.name', '=', "Ann")]),
                [sale_ann])

    @with_transaction()
    def test_sale_unsubscribable(self):
        """Blocking a sale of an unsubscribable scenario keeps every sale of
        its party out of the scenario"""
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        company = create_company()
        ann, bob = Party.create([{'name': "Ann"}, {'name': "Bob"}])
        with set_company(company):
            first_ann, second_ann, first_bob = create_sales(
                company, ann, ann, bob)
            scenario = sale_scenario(unsubscribable=True)
            Scenario.trigger()
            record, = Record.search([('record', '=', str(first_ann))])

            Record.block([record])

            self.assertEqual(
                list(ann.marketing_scenario_unsubscribed), [scenario])
            self.assertEqual(records(scenario), {
                    first_ann: True, second_ann: True, first_bob: False})

            third_ann, second_bob = create_sales(company, ann, bob)
            Scenario.trigger()
            self.assertEqual(records(scenario), {
                    first_ann: True, second_ann: True, first_bob: False,
                    second_bob: False})

    @with_transaction()
    def test_sale_subscribable(self):
        """Blocking a sale of a scenario that is not unsubscribable blocks
        only that sale"""
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        company = create_company()
        ann, = Party.create([{'name': "Ann"}])
        with set_company(company):
            first, second = create_sales(company, ann, ann)
            scenario = sale_scenario(unsubscribable=False)
            Scenario.trigger()
            record, = Record.search([('record', '=', str(first))])

            Record.block([record])

            self.assertEqual(list(ann.marketing_scenario_unsubscribed), [])
            third, = create_sales(company, ann)
            Scenario.trigger()
            self.assertEqual(records(scenario), {
                    first: True, second: False, third: False})

    @with_transaction()
    def test_scenario_company_migration(self):
        """A scenario without a company, as Tryton's own module leaves them,
        belongs to the only company once the module is updated; with
        several, it waits for an administrator to choose"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        table = Scenario.__table__()
        cursor = Transaction().connection.cursor()
        company = create_company()
        with set_company(company):
            scenario = sale_scenario(unsubscribable=False)

        def update_without_company():
            without_company([scenario.id])
            Scenario.__register__('marketing_automation')
            cursor.execute(*table.select(
                    table.company, where=table.id == scenario.id))
            company_id, = cursor.fetchone()
            return company_id

        self.assertEqual(update_without_company(), company.id)
        create_company("Second Shop")
        if backend.name == 'postgresql':
            # trytond tells that the column cannot be NOT NULL yet
            with self.assertLogs('trytond.backend', logging.WARNING):
                self.assertIsNone(update_without_company())
        else:
            self.assertIsNone(update_without_company())


del ModuleTestCase
