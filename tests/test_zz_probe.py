from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from tests.test_engine import *

class P(ModuleTestCase):
    module = 'marketing_automation'

    @with_transaction()
    def test_probe(self):
        Scenario = Pool().get('marketing.automation.scenario')
        Scenario.create([{'name': 'x', 'model': 'party.party', 'domain': '[]'}])
del ModuleTestCase
