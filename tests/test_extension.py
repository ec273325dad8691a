# SPDX-License-Identifier: GPL-3.0-or-later
"""Another module extends this one as Tryton modules do: by overriding its
hooks.

The extension is the test module of ``marketing_automation/tests``
(registered only for the tests): it adds a template variable, sends from
the scenario's address with a header of its own, adds an action that runs
one entry at a time as in Tryton's own module, and narrows the reporting of
the activities.  Each effect is seen where a user sees it: in a real email
received by a real SMTP server, in the entries, in a reporting row.
"""
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    TestCase, activate_module, drop_db, with_transaction)

from .tools import (
    EMAIL, SENDER, Mail, SendingTestMixin, create_entries, create_parties,
    create_running_scenario, inspecting, override_config, reporting, sent)


class ExtensionTestCase(SendingTestMixin, TestCase):
    "The hooks of the module, overridden by another module"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('marketing_test', 'hooks'): 'True',
                })

    def start_scenario(self, name, party_ids, activities):
        return self.running_scenario(
            name, [('id', 'in', party_ids)], activities)

    def test_email_hooks(self):
        """A variable, the sender and a header come from the overrides of
        email_context, email_sender and email_headers"""
        ann, = create_parties("Ann Archer")
        self.start_scenario("Autumn", [ann], [{
                    'name': "Autumn email",
                    'action': 'send_email',
                    'email_title': "Your shop",
                    'email_template': (
                        '<p>Your own shop: ${shop}</p>'
                        '<p><a href="unsubscribe">Unsubscribe</a></p>'),
                    }])

        self.run_crons()

        mail = Mail(self.smtp.to('ann@example.com')[0])
        self.assertEqual(mail['From'], 'Autumn <autumn@example.com>')
        self.assertEqual(mail.envelope_from, 'autumn@example.com')
        self.assertEqual(mail['X-Campaign'], 'Autumn')
        self.assertIn(
            "Your own shop: https://shop.example.com/ann-archer", mail.text)

        # without the extension, the email is the module's
        self.configure({('marketing_test', 'hooks'): 'False'})
        bob, = create_parties("Bob")
        self.start_scenario("Winter", [bob], [{
                    'name': "Winter email",
                    'action': 'send_email',
                    'email_title': "Hello",
                    'email_template': '<p>Hello</p>',
                    }])
        self.smtp.clear()
        self.run_crons()
        mail = Mail(self.smtp.to('bob@example.com')[0])
        self.assertEqual(mail['From'], SENDER)
        self.assertIsNone(mail['X-Campaign'])

    def test_action_of_one_entry_at_a_time(self):
        """An action written for Tryton's own module runs for each entry,
        the error of one entry its own"""
        ann, ghost = create_parties("Ann", "Ghost")
        self.start_scenario("Door to door", [ann, ghost], [{
                    'name': "Visit",
                    'action': 'record_visit',
                    'children': [('create', [{
                                    'name': "After the visit",
                                    'action': 'send_email',
                                    'email_title': "Thank you",
                                    'email_template': '<p>Thank you</p>',
                                    }])],
                    }])

        self.run_crons()

        with inspecting():
            pool = Pool()
            Visit = pool.get('marketing.automation.test.visit')
            RecordActivity = pool.get('marketing.automation.record.activity')
            Activity = pool.get('marketing.automation.activity')
            self.assertEqual(
                [v.party.name for v in Visit.search([])], ["Ann"])
            entries = {
                e.record.record.name: e for e in RecordActivity.search([
                        ('activity.name', '=', "Visit")])}
            self.assertEqual(entries["Ann"].state, 'done')
            self.assertIsNone(entries["Ann"].error)
            self.assertEqual(entries["Ghost"].state, 'done')
            self.assertIn("nobody opens the door", entries["Ghost"].error)
            # the activity goes on: one entry's error is no fault of it
            activity, = Activity.search([('name', '=', "Visit")])
            self.assertIsNone(activity.error)
            # the reporting counts the visits of the action
            row, = reporting('activity', [('activity', '=', activity.id)])
            self.assertEqual(
                (row['record_count'], row['visit_count']), (2, 1))
        # the children run for both, as after any action
        self.run_crons()
        self.assertEqual(
            sorted(r for m in self.smtp.received() for r in m.rcpt_tos),
            ['ann@example.com', 'ghost@example.com'])


class ReportingExtensionTestCase(TestCase):
    "The reporting, narrowed through its _joins and _where"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    @with_transaction()
    def test_reporting_hooks(self):
        "The reporting of another module counts only unblocked records"
        scenario = create_running_scenario([{'name': "Email", **EMAIL}])
        activity, = scenario.activities
        entries = create_entries(
            activity, sent(opened=True), sent(), sent(clicked=True))
        Record = Pool().get('marketing.automation.record')
        Record.write([entries[0].record], {'blocked': True})

        row, = reporting('activity', [('activity', '=', activity.id)])
        self.assertEqual(
            (row['record_count'], row['email_opened'], row['email_clicked']),
            (3, 2, 1))

        with override_config({('marketing_test', 'hooks'): 'True'}):
            row, = reporting('activity', [('activity', '=', activity.id)])
        self.assertEqual(
            (row['record_count'], row['email_opened'], row['email_clicked'],
                row['email_open_rate']),
            (2, 1, 1, 0.5))
