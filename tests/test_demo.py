# SPDX-License-Identifier: GPL-3.0-or-later
"The demonstration's database, as its first login finds it."
import contextlib
import importlib.util
import io
import os

from trytond.pool import Pool
from trytond.tests.test_tryton import (
    TestCase, activate_module, drop_db, with_transaction)


def demo_data():
    "The module demo/data.py, which fills the demonstration's database"
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        'demo', 'data.py')
    spec = importlib.util.spec_from_file_location('demo_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DemoTestCase(TestCase):
    "The data of the demonstration"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    @with_transaction()
    def test_first_login_opens_no_configuration_wizard(self):
        """The first login to the demonstration opens none of Tryton's
        wizards of module configuration, and finds the running scenario"""
        pool = Pool()
        ConfigWizardItem = pool.get('ir.module.config_wizard.item')
        Scenario = pool.get('marketing.automation.scenario')
        self.assertTrue(ConfigWizardItem.search([('state', '=', 'open')]))

        with contextlib.redirect_stdout(io.StringIO()):
            demo_data().create()

        self.assertEqual(ConfigWizardItem.search([('state', '=', 'open')]), [])
        scenario, = Scenario.search([])
        self.assertEqual(scenario.state, 'running')
