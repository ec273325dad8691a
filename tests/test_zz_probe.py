import datetime as dt
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction
from tests.test_engine import *

DOMAINS = [[('name', 'like', '\\')], [('name', 'like', '%\\')], [('name', 'ilike', 'A%\\')], [('name', 'like', 'Ann\\')]]

class P(ModuleTestCase):
    module = 'marketing_automation'

    def test_probe(self):
        for d in DOMAINS:
            self.one(d)

    @with_transaction()
    def one(self, d):
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Party = pool.get('party.party'); Party.create([{'name': 'Ann'}])
        try:
            s = Scenario.create([{'name': 'x', 'model': 'party.party', 'domain': encode(d)}])
            print(d, 'ACCEPTED')
        except Exception as e:
            print(d, type(e).__name__, str(e)[-200:])
        try:
            Party.search([], count=True)
        except Exception as e:
            print("   BROKEN", e)
del ModuleTestCase
