# SPDX-License-Identifier: GPL-3.0-or-later
"The module speaks French, German and Spanish to marketers and recipients."
import os

import lxml.html

from trytond.modules import marketing_automation
from trytond.modules.marketing_automation.exceptions import DomainError
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    TestCase, activate_module, with_transaction)
from trytond.transaction import Transaction

# What each language says on the unsubscribe pages and when a domain is
# refused, as written in its locale file.
LANGUAGES = {
    'fr': {
        'button': "Me désabonner",
        'done': "ne recevrez plus",
        'domain': "n'est pas valide",
        'scenario': "Scénario",
        },
    'de': {
        'button': "Mich abmelden",
        'done': "nicht mehr",
        'domain': "ist ungültig",
        'scenario': "Szenario",
        },
    'es': {
        'button': "Darme de baja",
        'done': "Ya no recibirá",
        'domain': "no es válido",
        'scenario': "Escenario",
        },
    }


def page_text(content):
    return ' '.join(
        lxml.html.document_fromstring(content).text_content().split())


class TranslationTestCase(TestCase):
    "The translations of the module"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        activate_module('marketing_automation')

    def load(self, code):
        "Make the language translatable with the module's locale file"
        pool = Pool()
        Lang = pool.get('ir.lang')
        Translation = pool.get('ir.translation')
        lang, = Lang.search([('code', '=', code)])
        Lang.write([lang], {'translatable': True})
        path = os.path.join(
            os.path.dirname(marketing_automation.__file__),
            'locale', '%s.po' % code)
        Translation.translation_import(code, 'marketing_automation', [path])
        return lang

    def create_record(self, lang):
        pool = Pool()
        Party = pool.get('party.party')
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        party, = Party.create([{'name': "Recipient", 'lang': lang.id}])
        scenario, = Scenario.create([{'name': "Welcome"}])
        record, = Record.create([{
                    'scenario': scenario.id,
                    'record': str(party),
                    }])
        return record

    def render(self, record, action):
        Unsubscribe = Pool().get(
            'marketing.automation.unsubscribe', type='report')
        with Transaction().set_context(language=record.language):
            _, content, _, _ = Unsubscribe.execute(
                [record.id], {'action': action, 'url': '/unsubscribe'})
        return page_text(content)

    @with_transaction()
    def test_unsubscribe_pages(self):
        "The unsubscribe pages speak the recipient's language"
        for code, texts in LANGUAGES.items():
            with self.subTest(language=code):
                record = self.create_record(self.load(code))
                self.assertEqual(record.language, code)

                confirm = self.render(record, 'confirm')
                done = self.render(record, 'done')

                self.assertIn(texts['button'], confirm)
                self.assertNotIn("Unsubscribe me", confirm)
                self.assertIn(texts['done'], done)
                self.assertNotIn(texts['button'], done)

    @with_transaction()
    def test_invalid_domain_message(self):
        "A refused domain is explained in the marketer's language"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        for code, texts in LANGUAGES.items():
            with self.subTest(language=code):
                self.load(code)
                with Transaction().set_context(language=code):
                    with self.assertRaises(DomainError) as raised:
                        Scenario.create([{
                                    'name': "Broken",
                                    'domain': '[("no_such_field", "=", 1)]',
                                    }])
                message = raised.exception.message
                self.assertIn(texts['domain'], message)
                self.assertIn("Broken", message)

    @with_transaction()
    def test_labels(self):
        "The marketer's client shows translated labels"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Model = pool.get('ir.model')
        for code, texts in LANGUAGES.items():
            with self.subTest(language=code):
                self.load(code)
                with Transaction().set_context(language=code):
                    states = dict(Scenario.fields_get(
                            ['state'])['state']['selection'])
                    name = Model.get_name(Scenario.__name__)
                self.assertNotEqual(states['draft'], "Draft")
                self.assertIn(texts['scenario'], name)
