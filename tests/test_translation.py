# SPDX-License-Identifier: GPL-3.0-or-later
"The module speaks French, German and Spanish to marketers and recipients."
import os

import lxml.html

from trytond.modules import marketing_automation
from trytond.modules.marketing_automation.exceptions import (
    DomainError, TemplateError)
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


def locale_entries(code):
    """The translations of the messages of the locale file of code, by
    'text:<message id>'"""
    import polib
    path = os.path.join(
        os.path.dirname(marketing_automation.__file__), 'locale',
        '%s.po' % code)
    return {
        e.msgctxt.split(',', 1)[-1]: e.msgstr
        for e in polib.pofile(path)
        if e.msgctxt.startswith('model:ir.message,')}


def locale_codes():
    return sorted(
        name[:-len('.po')] for name in os.listdir(os.path.join(
                os.path.dirname(marketing_automation.__file__), 'locale'))
        if name.endswith('.po'))


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
    def test_every_language_unsubscribe_pages(self):
        """The unsubscribe pages of every language of the module show its
        own texts, in the direction of the language"""
        codes = locale_codes()
        self.assertGreaterEqual(len(codes), 3)
        english = {
            'button': "Unsubscribe me",
            'confirm': "Do you want to stop receiving these emails?",
            'done': "You are unsubscribed.",
            }
        for code in codes:
            with self.subTest(language=code):
                texts = locale_entries(code)
                record = self.create_record(self.load(code))
                confirm = self.render(record, 'confirm')
                done = self.render(record, 'done')
                button = texts['text:msg_unsubscribe_button']
                self.assertTrue(button)
                self.assertIn(' '.join(button.split()), confirm)
                self.assertIn(' '.join(
                        texts['text:msg_unsubscribe_confirm'].split()),
                    confirm)
                self.assertIn(' '.join(
                        texts['text:msg_unsubscribe_done'].split()), done)
                for text in english.values():
                    self.assertNotIn(text, confirm + done)
                direction = self.direction(record, 'done')
                self.assertEqual(
                    direction, 'rtl' if code == 'fa' else 'ltr')

    def direction(self, record, action):
        Unsubscribe = Pool().get(
            'marketing.automation.unsubscribe', type='report')
        with Transaction().set_context(language=record.language):
            _, content, _, _ = Unsubscribe.execute(
                [record.id], {'action': action, 'url': '/unsubscribe'})
        return lxml.html.document_fromstring(content).get('dir')

    @with_transaction()
    def test_every_language_refused_template(self):
        "A refused template is explained in every language of the module"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        for code in locale_codes():
            with self.subTest(language=code):
                self.load(code)
                text = locale_entries(code)[
                    'text:msg_activity_invalid_email_template']
                start = text.split('%(')[0]
                with Transaction().set_context(language=code):
                    with self.assertRaises(TemplateError) as raised:
                        Scenario.create([{
                                    'name': "Broken",
                                    'activities': [('create', [{
                                                    'name': "Email",
                                                    'action': 'send_email',
                                                    'email_title': "Hi",
                                                    'email_template': (
                                                        '<p>${record.'
                                                        '__class__}</p>'),
                                                    }])],
                                    }])
                message = raised.exception.message
                self.assertIn(start, message)
                self.assertIn("__class__", message)

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
