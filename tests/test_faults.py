# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults stay where they start.

A recipient's error is written on its entry and the others go; an error
that is no recipient's (the sender, a template or a condition wrong for
everyone, the mail server refusing the sender or the login, a missing MJML
compiler) pauses its activity, visibly, and consumes no entry; a scenario
whose domain fails under the cron is skipped with its error shown while
the others enter their records.

Every test runs the crons in committed transactions and lets a real SMTP
server on the loopback receive the messages.
"""
import datetime as dt
import getpass
import logging
from unittest import mock

from sql import Null

from trytond.pool import Pool
from trytond.pyson import Eval, Greater
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from .tools import (
    Mail, SMTPServer, SendingTestMixin, committed, create_parties, encode,
    inspecting, message, welcome, without_mjml_compilers)

LOGGER = 'trytond.modules.marketing_automation'


def news(name, **values):
    "A root activity that sends a plain email"
    return {
        'name': name,
        'action': 'send_email',
        'email_title': f"{name} for ${{record.name}}",
        'email_template': f'<p>{name}: hello ${{record.name}}</p>',
        **values,
        }


class FaultsTestCase(SendingTestMixin, TestCase):
    "Faults of scenarios, activities and recipients, and their containment"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('email', 'from'): 'root@server.example.com',
                })

    # Setting things up

    def start_scenario(self, party_ids, activities, name="Spring"):
        # the names of the activities are the test's own
        activities = [
            dict(a, name=self.named(a['name'])) for a in activities]
        return self.running_scenario(
            name, [('id', 'in', party_ids)], activities)

    def store(self, model, record_id, **values):
        """Write values straight into the table of model (and into the
        translations of its translatable fields), as a record saved before
        the checks that would refuse it"""
        with committed():
            pool = Pool()
            Model = pool.get(model)
            Translation = pool.get('ir.translation')
            table = Model.__table__()
            translation = Translation.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [getattr(table, f) for f in values],
                    list(values.values()),
                    where=table.id == record_id))
            for field, value in values.items():
                if getattr(Model._fields[field], 'translate', False):
                    cursor.execute(*translation.update(
                            [translation.src, translation.value],
                            [value, value],
                            where=(translation.name == f'{model},{field}')
                            & (translation.res_id == record_id)))

    def named(self, name):
        return f'{name} {self._testMethodName}'

    def activity(self, name):
        Activity = Pool().get('marketing.automation.activity')
        activity, = Activity.search([('name', '=', self.named(name))])
        return activity

    def emails(self):
        "The (state, attempts) of the emails of this test in the outbox"
        Email = Pool().get('marketing.automation.email')
        return [(e.state, e.attempts) for e in Email.search([
                    ('record_activity.activity.name', 'like',
                        f'% {self._testMethodName}'),
                    ])]

    def activity_id(self, name):
        with inspecting():
            return self.activity(name).id

    def entries(self, name):
        "The (state, error, email sent) of the entries of the activity"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return sorted((
                (e.state, e.error, e.email_sent)
                for e in RecordActivity.search([
                        ('activity.name', '=', self.named(name))])),
            key=lambda e: (e[0], e[1] or '', e[2]))

    def retry_time_passed(self, name):
        "Let the retry delay of the paused activity run out"
        activity_id = self.activity_id(name)
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            table = Activity.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.error_date],
                    [dt.datetime.now() - dt.timedelta(days=1)],
                    where=table.id == activity_id))

    def received_by(self):
        return sorted(r for m in self.smtp.received() for r in m.rcpt_tos)

    def subjects(self):
        "The subjects received, without the name of the test"
        return sorted(
            Mail(m)['Subject'].replace(f' {self._testMethodName}', '')
            for m in self.smtp.received())

    def assertPaused(self, name, *texts):
        "The activity is paused with an error that says each of texts"
        with inspecting():
            activity = self.activity(name)
            self.assertTrue(activity.error, msg=f"{name} is not paused")
            self.assertTrue(activity.error_date)
            for text in texts:
                self.assertIn(text, activity.error)
            for state, error, sent in self.entries(name):
                self.assertEqual((state, sent), ('waiting', False))

    def assertRunning(self, name):
        with inspecting():
            self.assertIsNone(self.activity(name).error)

    # Scenarios

    def test_failing_domain_skips_its_scenario_only(self):
        "A domain that fails under the cron stops its scenario, not others"
        ann, bob = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        broken = self.start_scenario([ann], [news("Broken")], name="Broken")
        self.start_scenario([bob], [news("Fine")], name="Fine")
        # a field that a module update removed, say
        self.store(
            'marketing.automation.scenario', broken,
            domain=encode([('no_such_field', '=', 1)]))

        with self.assertLogs(LOGGER, logging.ERROR) as logs:
            self.run_crons()
        self.assertEqual(len(logs.records), 1)
        self.assertIn('no_such_field', logs.output[0])

        self.assertEqual(self.received_by(), ['bob@example.com'])
        with inspecting():
            Scenario = Pool().get('marketing.automation.scenario')
            scenario = Scenario(broken)
            self.assertEqual(scenario.record_count, 0)
            self.assertIn("Broken", scenario.error)
            self.assertIn("no_such_field", scenario.error)
            self.assertTrue(scenario.error_date)
            self.assertEqual(scenario.state, 'running')

        # the same error again is not logged again
        with self.assertNoLogs(LOGGER, logging.ERROR):
            self.trigger()

        self.store(
            'marketing.automation.scenario', broken,
            domain=encode([('id', '=', ann)]))
        self.run_crons()
        self.assertEqual(
            self.received_by(), ['ann@example.com', 'bob@example.com'])
        with inspecting():
            scenario = Pool().get('marketing.automation.scenario')(broken)
            self.assertIsNone(scenario.error)
            self.assertEqual(scenario.record_count, 1)

    # Conditions

    def test_condition_failing_for_some_records(self):
        "A condition that fails for a record is that record's error"
        parties = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'),
            ("Cid", 'cid@example.com'),
            code={"Ann": '42', "Bob": 'B-7', "Cid": '43'}.get)
        # a code that is not a number makes the comparison fail
        condition = encode(Greater(Eval('self.code', 0), 1))
        self.start_scenario(parties, [
                news("Numbered", condition=condition),
                news("Everyone")])

        self.run_crons()

        self.assertEqual(self.subjects(), sorted([
                    "Numbered for Ann", "Numbered for Cid",
                    "Everyone for Ann", "Everyone for Bob",
                    "Everyone for Cid"]))
        self.assertRunning("Numbered")
        with inspecting():
            entries = self.entries("Numbered")
        self.assertEqual([e[0] for e in entries], ['done'] * 3)
        failed, = [e for e in entries if e[1]]
        self.assertFalse(failed[2])
        self.assertIn("could not be evaluated", failed[1])
        self.assertIn("B-7", failed[1])

    def test_condition_failing_for_every_record(self):
        "A condition that fails for every record pauses its activity"
        parties = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'),
            code={"Ann": 'A-1', "Bob": 'B-2'}.get)
        condition = encode(Greater(Eval('self.code', 0), 1))
        self.start_scenario(parties, [
                news("Numbered", condition=condition),
                news("Everyone")])

        with self.assertLogs(LOGGER, logging.ERROR) as logs:
            self.run_crons()
        self.assertEqual(len(logs.records), 1)

        self.assertEqual(self.subjects(), [
                "Everyone for Ann", "Everyone for Bob"])
        self.assertPaused("Numbered", "fails for every record", "A-1")

        # the marketer fixes the condition: the entries go
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.write([self.activity("Numbered")], {
                    'condition': encode(Eval('self.name', '') != ''),
                    })
        self.assertRunning("Numbered")
        self.process()
        self.assertEqual(len(self.smtp.received()), 4)
        with inspecting():
            self.assertEqual(
                [e[0] for e in self.entries("Numbered")], ['done'] * 2)

    # Templates

    def test_template_failing_for_everyone(self):
        "A template that fails for every recipient pauses its activity"
        parties = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        self.start_scenario(parties, [
                news("Broken", email_template='<p>${1 / 0}</p>'),
                news("Fine")])

        with self.assertLogs(LOGGER, logging.ERROR) as logs:
            self.run_crons()
        self.assertEqual(len(logs.records), 1)

        self.assertEqual(self.subjects(), ["Fine for Ann", "Fine for Bob"])
        self.assertPaused("Broken", "ZeroDivisionError", "${1 / 0}")
        with inspecting():
            self.assertFalse(self.emails())

        # nothing happens before the marketer acts or the retry delay ends
        self.process()
        self.assertEqual(len(self.smtp.received()), 2)
        # when the retry delay ends, it is tried again: the same error is
        # shown, not logged again
        self.retry_time_passed("Broken")
        with self.assertNoLogs(LOGGER, logging.ERROR):
            self.process()
        self.assertPaused("Broken", "ZeroDivisionError")

        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.write([self.activity("Broken")], {
                    'email_template': '<p>Fixed for ${record.name}</p>',
                    })
        self.process()
        self.assertRunning("Broken")
        self.assertEqual(len(self.smtp.received()), 4)
        with inspecting():
            self.assertEqual(self.entries("Broken"), [
                    ('done', None, True), ('done', None, True)])

    def test_template_refused_by_the_sandbox(self):
        "A template stored before the sandbox refused it pauses at run time"
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("Old"), news("Fine")])
        self.store(
            'marketing.automation.activity', self.activity_id("Old"),
            email_template='<p>${record.__class__}</p>')

        self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Old", "${record.__class__}", "not allowed")

    def test_unusable_link_stored_before_the_checks(self):
        "A link refused by the checks pauses an activity stored before them"
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("Old"), news("Fine")])
        self.store(
            'marketing.automation.activity', self.activity_id("Old"),
            email_template=(
                '<p><a href="https://example.org/a&#13;&#10;X: 1">a</a></p>'))

        self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Old")

    def test_template_that_never_ends(self):
        "A template that outlasts its time limit pauses its activity"
        self.configure({('marketing', 'render_timeout'): '0.3'})
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [
                news("Endless", email_template=(
                        '<div><py:for each="i in range(10000)">'
                        '<py:for each="j in range(10000)"/></py:for></div>')),
                news("Fine")])

        self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Endless", "too long")

    def test_template_that_loops_in_c(self):
        """A template whose work never returns to Python pauses its activity
        at the time limit, and the other activities go on"""
        self.configure({('marketing', 'render_timeout'): '1'})
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [
                news("Runaway", email_template=(
                        '<p>${[[0] * 5000000] * 5000000 == '
                        '[[0] * 5000000] * 5000000}</p>')),
                news("Sentinel", email_template=(
                        '<p>${any(iter(int, 1))}</p>')),
                news("Fine")])

        self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Runaway", "too long")
        self.assertPaused(
            "Sentinel", "${any(iter(int, 1))}: iter() with a sentinel")

    def test_email_too_heavy(self):
        """An email heavier than [marketing] email_max_size is not sent: the
        error of its recipient, or the fault of its activity when it is so
        for everyone, names the expression that weighs most"""
        self.configure({('marketing', 'email_max_size'): '20000'})
        ann, bob, eve = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'),
            ("Eve" * 10000, 'eve@example.com'))
        self.start_scenario([ann, bob, eve], [
                news("Heavy", email_template=(
                        '<p>Hello</p>\n'
                        '<p py:for="i in range(2000)">${record.name}</p>')),
                news("Named")])

        self.run_crons()

        self.assertEqual(
            self.subjects(), ["Named for Ann", "Named for Bob"])
        self.assertPaused(
            "Heavy", "more than the 20 KB an email may: ${record.name} "
            "(line 2) makes")
        with inspecting():
            (state, error, sent), = [
                e for e in self.entries("Named") if not e[2]]
        self.assertEqual(state, 'done')
        # her name in the subject
        self.assertIn(
            "the email weighs more than the 20 KB an email may: the title "
            "makes 30 KB of it", error)

    def test_missing_mjml_compiler(self):
        """Without an MJML compiler an MJML activity waits, and goes once
        there is one"""
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [
                news("Styled", email_template=(
                        '<mjml><mj-body><mj-section><mj-column>'
                        '<mj-text>Hello ${record.name}</mj-text>'
                        '</mj-column></mj-section></mj-body></mjml>')),
                news("Fine")])
        with without_mjml_compilers():
            self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Styled", "MJML")

        # the compiler is installed: the next try after the delay sends
        self.retry_time_passed("Styled")
        self.process()
        self.assertEqual(
            self.subjects(), ["Fine for Ann", "Styled for Ann"])
        self.assertRunning("Styled")

    def test_error_of_a_template_variable(self):
        "An unexpected error of the action is contained in its activity"
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("Odd"), news("Fine")])
        with inspecting():
            Activity = Pool().get('marketing.automation.activity')
        email_context = Activity.email_context

        def failing(activity, record):
            if activity.name == self.named("Odd"):
                raise RuntimeError("the variables are broken")
            return email_context(activity, record)

        with mock.patch.object(Activity, 'email_context', failing), \
                self.assertLogs(LOGGER, logging.ERROR) as logs:
            self.run_crons()
        # the administrator gets the traceback, once
        self.assertEqual(len(logs.records), 1)
        self.assertIsNotNone(logs.records[0].exc_info)

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Odd", "RuntimeError", "the variables are broken")

    # Senders

    def test_default_configuration_sends(self):
        "With trytond's default sender the emails go out as Tryton's do"
        self.configure({
                ('email', 'from'): getpass.getuser(),
                ('marketing', 'email_from'): '',
                })
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [welcome()])

        self.run_crons()

        mail = Mail(self.smtp.to('ann@example.com')[0])
        self.assertEqual(mail['From'], getpass.getuser())
        self.assertEqual(mail.envelope_from, getpass.getuser())
        self.assertRunning("Welcome")

    def test_invalid_sender_stored_before_the_checks(self):
        "A sender that is no address pauses its activity and consumes nothing"
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("Signed"), news("Fine")])
        self.store(
            'marketing.automation.activity', self.activity_id("Signed"),
            email_from='The Marketing Team')

        self.run_crons()

        self.assertEqual(self.subjects(), ["Fine for Ann"])
        self.assertPaused("Signed", "The Marketing Team")

        # resuming without a fix pauses it again
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.resume([self.activity("Signed")])
        self.assertRunning("Signed")
        self.process()
        self.assertPaused("Signed", "The Marketing Team")

        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.write([self.activity("Signed")], {
                    'email_from': 'Team <team@example.com>',
                    })
        self.process()
        mail = Mail(self.smtp.to('ann@example.com')[-1])
        self.assertEqual(mail['Subject'], "Signed for Ann")
        self.assertEqual(mail['From'], 'Team <team@example.com>')

    def test_invalid_sender_refused_on_save(self):
        "A sender that is no address is refused when the activity is saved"
        ann, = create_parties(("Ann", 'ann@example.com'))
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            with self.assertRaises(Exception) as raised:
                Scenario.create([{
                            'name': "Spring",
                            'activities': [('create', [news(
                                            "Signed",
                                            email_from="news at example")])],
                            }])
        self.assertEqual(raised.exception.message, message(
                'msg_activity_invalid_email_from',
                sender="news at example", activity="Signed"))

    def test_sender_refused_by_the_server(self):
        "A sender the server refuses pauses its activity; its emails wait"
        ann, bob = create_parties(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        self.start_scenario([ann, bob], [
                news("Signed", email_from='Team <team@example.com>'),
                news("Fine")])
        self.smtp.refused_senders['team@example.com'] = 550

        with self.assertLogs(LOGGER, logging.ERROR) as logs:
            self.run_crons()
        self.assertEqual(len(logs.records), 1)

        self.assertEqual(self.subjects(), ["Fine for Ann", "Fine for Bob"])
        self.assertPaused(
            "Signed", "refused the sender", "team@example.com", "550")
        with inspecting():
            self.assertEqual(self.emails(), [('pending', 0)] * 2)

        # paused: the next run does not try again
        self.process()
        self.assertEqual(len(self.smtp.received()), 2)

        # the postmaster allows the sender and the marketer resumes
        del self.smtp.refused_senders['team@example.com']
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.resume([self.activity("Signed")])
        self.process()
        self.assertEqual(self.subjects(), [
                "Fine for Ann", "Fine for Bob",
                "Signed for Ann", "Signed for Bob"])
        self.assertRunning("Signed")
        with inspecting():
            self.assertEqual(self.entries("Signed"), [
                    ('done', None, True), ('done', None, True)])

    def test_login_refused_by_the_server(self):
        "A login the server refuses pauses the activities, consuming nothing"
        self.smtp.stop()
        self.smtp = SMTPServer(credentials=('marketing', 'secret')).start()
        self.addCleanup(self.smtp.stop)
        wrong = f'smtp://marketing:wrong@127.0.0.1:{self.smtp.port}'
        right = f'smtp://marketing:secret@127.0.0.1:{self.smtp.port}'
        self.configure({('email', 'uri'): wrong})
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("First"), news("Second")])

        self.run_crons()

        self.assertEqual(self.smtp.received(), [])
        for name in ["First", "Second"]:
            self.assertPaused(name, "refused the connection")
        with inspecting():
            self.assertEqual(self.emails(), [('pending', 0)] * 2)

        self.configure({('email', 'uri'): right})
        for name in ["First", "Second"]:
            self.retry_time_passed(name)
        self.process()
        self.assertEqual(
            self.subjects(), ["First for Ann", "Second for Ann"])

    def test_server_down_consumes_nothing(self):
        "While the server is down, no email gives up after its attempts"
        ann, = create_parties(("Ann", 'ann@example.com'))
        self.start_scenario([ann], [news("Patient")])
        self.smtp.stop()
        self.run_crons()
        for _ in range(12):
            with committed():
                Email = Pool().get('marketing.automation.email')
                table = Email.__table__()
                cursor = Transaction().connection.cursor()
                cursor.execute(*table.update(
                        [table.next_attempt],
                        [dt.datetime.now() - dt.timedelta(minutes=1)],
                        where=table.next_attempt != Null))
            self.process()
        with inspecting():
            (state, attempts), = self.emails()
            self.assertEqual(state, 'pending')
            self.assertGreater(attempts, 10)
            self.assertEqual(
                [e[0] for e in self.entries("Patient")], ['waiting'])

        self.smtp.start()
        with committed():
            Email = Pool().get('marketing.automation.email')
            Email.write(Email.search([]), {
                    'next_attempt': dt.datetime.now() - dt.timedelta(
                        minutes=1)})
        self.process()
        self.assertEqual(self.subjects(), ["Patient for Ann"])
