# SPDX-License-Identifier: GPL-3.0-or-later
"""A site module written for Tryton's own marketing_automation keeps working.

The site module is ``marketing_automation/tests/site.py``: it overrides the
methods of the Python API that SPEC.md lists, with their upstream
signatures, and calls ``super()``.  The scenario below is run as the crons
and the recipients run it, and each override must have been called, with
its upstream arguments, and have had its effect on the emails received by a
real SMTP server.  An override the engine silently skips fails the test.
"""
import datetime as dt
import unittest

from trytond.pool import Pool
from trytond.pyson import Equal, Eval, Not, PYSONEncoder
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from trytond.modules.marketing_automation.exceptions import ActivityError

from .tools import (
    SendingTestMixin, committed, create_parties, decide_events, html_links,
    human_request, inspecting, parse_message)

# Every method of Tryton's module that a site may override and that the
# engine must call (SPEC.md, "Python API that sites override")
API = {
    'Scenario': ['trigger'],
    'Activity': [
        'execute', 'execute_send_email', '_email_recipient',
        'email_context', '_email'],
    'Record': ['eval', 'language', 'block'],
    'RecordActivity': [
        'get', 'set_delay', 'process', 'do', 'cancel', '_cancel_opposite',
        'on_email_opened', 'on_email_clicked', '_on_event'],
    }
ONE_CLICK = 'List-Unsubscribe=One-Click'


def site():
    from trytond.modules.marketing_automation.tests import site
    return site


class SiteModuleTestCase(SendingTestMixin, TestCase):
    "The overrides of a site module written for Tryton's own module"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module(['marketing_automation', 'tests'])

    def setUp(self):
        super().setUp()
        self.start_sending()
        site().CALLS.clear()

    def calls(self, name):
        "The arguments of the calls of the override name"
        return [c[1:] for c in site().CALLS if c[0] == name]

    def create_parties(self, *names):
        "The parties of names, each with the address of its last name"
        return create_parties(*[
                (n, '%s@example.com' % n.split()[-1].lower())
                for n in names])

    def entry(self, party_id, name):
        RecordActivity = Pool().get('marketing.automation.record.activity')
        entry, = RecordActivity.search([
                ('record.record', '=', 'party.party,%s' % party_id),
                ('activity.name', '=', name),
                ])
        return entry

    def mail_to(self, address):
        received, = self.smtp.to(address)
        message = parse_message(received.data)
        return message, html_links(
            message.get_body(('html',)).get_content())[0]

    def test_every_override_is_called(self):
        "Each override of the API is called where Tryton's module calls it"
        ann, desk, aime, zed = self.create_parties(
            "Ann Archer", "Desk Bob", "Aimé Martin", "Zed Zorro")
        self.running_scenario("Autumn", [
                ('id', 'in', [ann, desk, aime, zed])], [{
                    'name': "Welcome",
                    'action': 'send_email',
                    'condition': PYSONEncoder().encode(
                        Not(Equal(Eval('self.name', ''), "Zed Zorro"))),
                    'email_title': "Hello ${record.name}",
                    'email_template': (
                        '<p>${site_scenario} for ${record.name}</p>'
                        '<p><a href="https://shop.example.com/">Shop</a></p>'
                        '<p><a href="unsubscribe">Unsubscribe</a></p>'),
                    'children': [('create', [{
                                    'name': "Later",
                                    'on': 'email_clicked',
                                    'delay': dt.timedelta(days=1),
                                    }, {
                                    'name': "Reminder",
                                    'on': 'email_opened_not',
                                    'delay': dt.timedelta(days=2),
                                    }])],
                    }])

        self.trigger()
        self.assertEqual(self.calls('Scenario.trigger'), [(None,)])
        # the condition went through Record.eval: Zed does not enter
        self.assertEqual(len(self.calls('Record.eval')), 4)
        self.assertEqual(
            sorted(n for _, n in self.calls('RecordActivity.get')),
            ["Welcome"] * 3)

        self.process()
        self.assertEqual(self.calls('RecordActivity.process'), [()])
        self.assertTrue(self.calls('RecordActivity.do'))
        self.assertTrue(self.calls('RecordActivity._cancel_opposite'))
        executed = self.calls('Activity.execute')
        self.assertEqual(len(executed), 3)
        for name, model, _, kwargs in executed:
            self.assertEqual(name, "Welcome")
            self.assertEqual(model, 'marketing.automation.record.activity')
        # and again when the entries are done
        self.assertEqual(len(self.calls('Record.eval')), 7)
        self.assertEqual(len(self.calls('Activity.execute_send_email')), 3)
        self.assertEqual(
            {m for m, _ in self.calls('Activity.email_context')},
            {'marketing.automation.record'})
        self.assertEqual(
            {m for m, _ in self.calls('Activity._email_recipient')},
            {'party.party'})
        self.assertEqual(len(self.calls('Activity._email')), 3)
        self.assertEqual(len(self.calls('Record.language')), 3)

        # the overrides made the emails
        message, links = self.mail_to('archer@example.com')
        self.assertEqual(message['X-Site'], 'site')
        self.assertIn("Autumn for Ann Archer", message.get_body(
                ('plain',)).get_content())
        self.assertTrue(message['List-Unsubscribe'])
        self.assertEqual(self.smtp.to('bob@example.com'), [])
        desk_message, _ = self.mail_to('desk@site.example')
        self.assertEqual(desk_message['To'], 'Front Desk <desk@site.example>')
        aime_message, _ = self.mail_to('martin@example.com')
        self.assertEqual(aime_message['Content-Language'], 'fr')
        self.assertEqual(self.smtp.to('zorro@example.com'), [])

        # the reminders wait through set_delay
        self.assertIn(
            ("Reminder",), self.calls('RecordActivity.set_delay'))

        # a person clicks: the click and the open go through the overrides,
        # the child waiting for the click is made due through set_delay,
        # and the reminder is cancelled through cancel
        shop = [href for href, text in links if text == "Shop"][0]
        response = human_request(self.client, shop)
        self.assertTrue(response.status_code in {301, 302, 303})
        decide_events()
        with inspecting():
            welcome = self.entry(ann, "Welcome")
            later = self.entry(ann, "Later")
            reminder = self.entry(ann, "Reminder")
            self.assertTrue(welcome.email_clicked)
            self.assertEqual(reminder.state, 'cancelled')
            self.assertGreater(
                later.at, dt.datetime.now() + dt.timedelta(days=1)
                + dt.timedelta(minutes=50))
        self.assertIn(
            ([welcome.id],), self.calls('RecordActivity.on_email_clicked'))
        self.assertEqual(
            sorted(e for i, e in self.calls('RecordActivity._on_event')
                if i == welcome.id),
            ['email_clicked', 'email_opened'])
        self.assertIn(("Later",), self.calls('RecordActivity.set_delay'))
        self.assertIn(
            ([reminder.id],), self.calls('RecordActivity.cancel'))

        # the email opened by another person goes through on_email_opened
        aime_pixel = html_links(
            aime_message.get_body(('html',)).get_content())[1][-1]
        human_request(self.client, aime_pixel)
        decide_events()
        with inspecting():
            aime_welcome = self.entry(aime, "Welcome")
            self.assertTrue(aime_welcome.email_opened)
        self.assertIn(
            ([aime_welcome.id],), self.calls('RecordActivity.on_email_opened'))

        # the recipient unsubscribes in one click: through Record.block
        url = message['List-Unsubscribe'].strip('<>')
        response = self.client.post(
            url, data=ONE_CLICK,
            content_type='application/x-www-form-urlencoded')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(self.calls('Record.block')), 1)
        with inspecting():
            self.assertTrue(self.entry(ann, "Welcome").record.blocked)

        # nothing of the API was skipped
        site_module = site()
        for class_name, names in API.items():
            klass = getattr(site_module, class_name)
            for name in names:
                self.assertIn(
                    name, vars(klass),
                    msg=f"the site module does not override {name}")
                self.assertTrue(
                    self.calls(f'{class_name}.{name}'),
                    msg=f"{class_name}.{name} was never called")

    def test_added_event(self):
        """The event declared by another module: the children of its action
        wait for it, and it makes them due"""
        ann, = self.create_parties("Ann Visited")
        self.running_scenario("Visits", [('id', '=', ann)], [{
                    'name': "Visit",
                    'action': 'record_visit',
                    'children': [('create', [{
                                    'name': "Returned",
                                    'on': 'visit_returned',
                                    'delay': dt.timedelta(hours=3),
                                    }, {
                                    'name': "Gone",
                                    'on': 'visit_returned_not',
                                    'delay': dt.timedelta(days=7),
                                    }])],
                    }])
        self.run_crons()
        with committed():
            RecordActivity = Pool().get(
                'marketing.automation.record.activity')
            visit = self.entry(ann, "Visit")
            self.assertEqual(visit.state, 'done')
            self.assertIsNone(self.entry(ann, "Returned").at)
            RecordActivity.on_events([visit], ['visit_returned'])
        with inspecting():
            self.assertTrue(self.entry(ann, "Visit").visit_returned)
            returned = self.entry(ann, "Returned")
            self.assertGreater(
                returned.at, dt.datetime.now() + dt.timedelta(hours=2))
            self.assertEqual(self.entry(ann, "Gone").state, 'cancelled')

        # an email's child may not wait for it
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            parent, = Activity.search([('name', '=', "Visit")])
            Activity.write([parent], {'action': 'send_email',
                    'email_title': "Hi", 'email_template': '<p>Hi</p>'})
            child, = Activity.search([('name', '=', "Returned")])
            with self.assertRaises(ActivityError):
                Activity.write([child], {'delay': dt.timedelta(hours=4)})
            Transaction().rollback()

    def test_added_gate(self):
        """The gate added by another module holds the entries it says until
        the time it says, and the others go"""
        ann, quinn = self.create_parties("Ann Loud", "Quiet Quinn")
        self.running_scenario("Quiet", [('id', 'in', [ann, quinn])], [{
                    'name': "Hello",
                    'action': 'send_email',
                    'email_title': "Hello",
                    'email_template': '<p>Hello ${record.name}</p>',
                    }])
        self.run_crons()
        self.assertEqual(len(self.smtp.to('loud@example.com')), 1)
        self.assertEqual(self.smtp.to('quinn@example.com'), [])
        with inspecting():
            held = self.entry(quinn, "Hello")
            self.assertEqual(held.state, 'waiting')
            self.assertEqual(held.waiting_for, 'quiet')
            self.assertGreater(
                held.waiting_until, dt.datetime.now() + dt.timedelta(
                    hours=23))


class OverriddenTestCase(unittest.TestCase):
    "How the engine tells a method of another module from its own"

    def test_overridden(self):
        from trytond.modules.marketing_automation.overrides import overridden

        class Own:
            __module__ = 'trytond.modules.marketing_automation.engine'

            def execute(self):
                pass

            def language(self):
                pass

        class Tests(Own):
            __module__ = 'trytond.modules.marketing_automation.tests.site'

            def execute(self):
                pass

        class Other(Own):
            __module__ = 'trytond.modules.site_shop.marketing'

            def language(self):
                pass

        class Pooled(Other):
            __module__ = 'trytond.modules.marketing_automation.sale'

            def language(self):
                pass

        self.assertTrue(overridden(Tests, 'execute'))
        self.assertFalse(overridden(Tests, 'language'))
        self.assertTrue(overridden(Other(), 'language'))
        self.assertFalse(overridden(Other, 'execute'))
        # a class of this module after the site's: the first one counts
        self.assertFalse(overridden(Pooled, 'language'))
        self.assertFalse(overridden(Pooled, 'missing'))
