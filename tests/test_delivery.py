# SPDX-License-Identifier: GPL-3.0-or-later
"""What the delivery of the emails guarantees when things go wrong.

Every test injects a fault and looks at both ends: what a real SMTP server on
the loopback received, and what the marketer sees on the record activities.
The mail server refuses connections, answers 4xx or 5xx for chosen
recipients, or stalls past the client's timeout; the crons run in real
processes that are killed in the middle of a batch or that race each other.

The guarantees:

- an entry is done only once the server accepted its message; a transient
  failure leaves it waiting for a later run, with a growing delay; a
  permanent one is written on the entry and never retried;
- a process killed while delivering loses nothing, and at most the message
  in flight goes twice, with the same Message-ID;
- two processes entering records or sending emails at the same moment enter
  each record once and send each email once;
- no failing recipient, template or answer holds up the rest of a batch;
- without workers, one run of the process cron delivers what it made due.
"""
import datetime as dt
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from collections import Counter
from unittest.mock import patch

from trytond import backend
from trytond.i18n import gettext
from trytond.modules.marketing_automation import marketing_automation_email
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, TestCase, activate_module, drop_db)

from .tools import (
    REMINDER, SMTPServer, SendingTestMixin, committed, create_parties,
    inspecting, parse_message)

NEWS = {
    'name': "News",
    'action': 'send_email',
    'email_title': "News for ${record.name}",
    'email_template': (
        '<p>Hello ${record.name},</p>'
        '<p><a href="https://shop.example.com/news">Read our news</a></p>'),
    }
PROCESS = 'marketing.automation.record.activity|process'
TRIGGER = 'marketing.automation.scenario|trigger'
SHARED_DATABASE = (
    "needs a database that other processes open: the SQLite test database "
    "lives in the memory of the test process")
ROW_LOCKS = (
    "races processes on a shared database with row locks (PostgreSQL); "
    "the SQLite test database lives in the memory of the test process")
# An email that could not be sent waits five minutes for its next attempt,
# twice as long after each further failure.
FIRST_DELAY = dt.timedelta(minutes=5)

# A process of a site without workers: it runs the method of a cron as
# trytond-cron does (in a transaction retried on the errors of concurrent
# access) once the test says go, then the tasks it queued.  It exits with 1
# if a task failed.
CRON_PROCESS = '''
import logging
import os
import sys
import time

from trytond import backend, config
from trytond.pool import Pool
from trytond.transaction import Transaction
from trytond.worker import run_task


class Failures(logging.Handler):

    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record):
        self.count += 1


logging.basicConfig(level=logging.ERROR)
failures = Failures()
logging.getLogger().addHandler(failures)
database = os.environ['DB_NAME']
model, method = sys.argv[1].split('|')
pool = Pool(database)
with Transaction().start(database, 0, readonly=True):
    pool.init()
print('ready', flush=True)
sys.stdin.readline()

retry = config.getint('database', 'retry')
for count in range(retry + 1):
    try:
        with Transaction().start(
                database, 0, context={'_skip_warnings': True}):
            getattr(pool.get(model), method)()
        break
    except backend.DatabaseOperationalError:
        if count == retry:
            raise
        time.sleep(0.02 * (count + 1))
tasks = Transaction().tasks
while tasks:
    run_task(database, tasks.pop())
sys.exit(1 if failures.count else 0)
'''


def address(name):
    return f'{name}@example.com'


def now():
    return dt.datetime.now()


def message_id(received):
    return parse_message(received.data)['Message-ID']


class DeliveryTestCase(SendingTestMixin, TestCase):
    "The delivery of the emails under faults"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.smtp = SMTPServer().start()
        self.addCleanup(self.smtp.stop)
        self.configure({
                ('email', 'uri'): self.smtp.uri(timeout=1),
                ('email', 'from'): 'news@example.com',
                ('queue', 'worker'): 'False',
                })
        self.addCleanup(self.stop_scenarios)

    # Setting things up, and the crons

    def start_scenario(self, party_ids, activity=NEWS):
        """Create a running scenario whose activity (with a reminder after
        it) sends an email to the parties and return its id"""
        return self.running_scenario(
            "Delivery", [('id', 'in', party_ids)], [{
                    **activity,
                    'children': [('create', [REMINDER])],
                    }])

    def retry_now(self, scenario_id):
        "Let the time pass until the pending emails may be sent again"
        with committed():
            Email = Pool().get('marketing.automation.email')
            emails = Email.search([
                    ('record_activity.record.scenario', '=', scenario_id),
                    ('state', '=', 'pending'),
                    ])
            self.assertTrue(emails, msg="no email waits for delivery")
            Email.write(emails, {
                    'next_attempt': now() - dt.timedelta(minutes=1),
                    })

    # Looking at both ends

    def received(self):
        "How many messages the server received for each address"
        return Counter(r for m in self.smtp.received() for r in m.rcpt_tos)

    def entries(self, scenario_id, activity_name="News"):
        "The record activities of the activity by party name"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return {
            e.record.record.name: e for e in RecordActivity.search([
                    ('record.scenario', '=', scenario_id),
                    ('activity.name', '=', activity_name),
                    ])}

    def emails(self, scenario_id):
        "The emails waiting for delivery by party name"
        Email = Pool().get('marketing.automation.email')
        return {
            e.record_activity.record.record.name: e for e in Email.search([
                    ('record_activity.record.scenario', '=', scenario_id),
                    ])}

    def logged(self, scenario_id):
        "How many emails ir.email logged for each party name"
        IrEmail = Pool().get('ir.email')
        return Counter(
            e.resource.name for e in IrEmail.search([
                    ('marketing_automation_record.scenario', '=',
                        scenario_id),
                    ]))

    def assertSent(self, scenario_id, names):
        "Assert the emails to names are sent, done and logged once"
        entries = self.entries(scenario_id)
        logged = self.logged(scenario_id)
        emails = self.emails(scenario_id)
        reminders = self.entries(scenario_id, REMINDER['name'])
        for name in names:
            entry = entries[name]
            self.assertEqual(
                (entry.state, entry.email_sent, entry.error),
                ('done', True, None), msg=name)
            self.assertEqual(logged[name], 1, msg=name)
            self.assertNotIn(name, emails)
            self.assertIn(name, reminders)

    def assertWaiting(self, scenario_id, name, error, attempts, delay):
        """Assert the email to name waits for its next attempt after delay
        from now, the entry showing error"""
        entry = self.entries(scenario_id)[name]
        self.assertEqual((entry.state, entry.email_sent), ('waiting', False))
        self.assertIn(error, entry.error)
        email = self.emails(scenario_id)[name]
        self.assertEqual((email.state, email.attempts), ('pending', attempts))
        # the database may keep whole seconds only
        self.assertAlmostEqual(
            email.next_attempt, now() + delay, delta=dt.timedelta(seconds=5))
        self.assertFalse(self.logged(scenario_id)[name])
        self.assertNotIn(name, self.entries(scenario_id, REMINDER['name']))

    def assertFailed(self, scenario_id, name, error):
        "Assert the entry of name is done with error and no email"
        entry = self.entries(scenario_id)[name]
        self.assertEqual(
            (entry.state, entry.email_sent, entry.error),
            ('done', False, error))
        self.assertNotIn(name, self.emails(scenario_id))
        self.assertFalse(self.logged(scenario_id)[name])

    # Processes

    def start_cron_processes(self, method, count=1):
        """Start count processes that each run the method of a cron and the
        tasks it queues once they are told to go"""
        env = dict(os.environ,
            TRYTOND_EMAIL__URI=self.smtp.uri(timeout=5),
            TRYTOND_EMAIL__FROM='news@example.com',
            TRYTOND_QUEUE__WORKER='False')
        processes = []
        for _ in range(count):
            errors = tempfile.TemporaryFile(mode='w+')
            self.addCleanup(errors.close)
            process = subprocess.Popen(
                [sys.executable, '-c', CRON_PROCESS, method],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                env=env, text=True)
            process.errors = errors
            self.addCleanup(self.end_process, process)
            processes.append(process)
        return processes

    def end_process(self, process):
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()

    def output(self, process):
        process.errors.seek(0)
        return process.errors.read()

    def go(self, *processes):
        "Tell the processes to go together once they are all ready"
        for process in processes:
            ready, _, _ = select.select([process.stdout], [], [], 60)
            if not ready or process.stdout.readline().strip() != 'ready':
                self.fail(
                    "the process did not start:\n" + self.output(process))
        for process in processes:
            process.stdin.write('go\n')
            process.stdin.flush()

    def assertFinished(self, process, timeout=60):
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            self.fail("the process did not finish:\n" + self.output(process))
        self.assertEqual(status, 0, msg=self.output(process))

    # Answers of the mail server

    def test_server_down(self):
        "While the server refuses connections, the emails wait for it"
        scenario = self.start_scenario(create_parties(
            'ann', 'bob', email=address, bulk=True))
        self.smtp.stop()

        self.run_crons()

        with inspecting():
            for name in ['ann', 'bob']:
                self.assertWaiting(
                    scenario, name, "Connection refused", 1, FIRST_DELAY)

        # the next run is too early to try again
        self.process()
        with inspecting():
            self.assertWaiting(
                scenario, 'ann', "Connection refused", 1, FIRST_DELAY)

        # the next attempt fails too, and waits twice as long
        self.retry_now(scenario)
        self.process()
        with inspecting():
            for name in ['ann', 'bob']:
                self.assertWaiting(
                    scenario, name, "Connection refused", 2, 2 * FIRST_DELAY)

        self.smtp.start()
        self.retry_now(scenario)
        self.process()

        expected = Counter({address('ann'): 1, address('bob'): 1})
        self.assertEqual(self.received(), expected)
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob'])

        # nothing goes twice
        self.run_crons()
        self.assertEqual(self.received(), expected)

    def test_transport_replaced_as_tryton_tests_do(self):
        """A test written for Tryton's own module replaces
        send_message_transactional (and SMTPDataManager) of
        marketing_automation.py: it gets every message, none leaves"""
        from trytond.modules.marketing_automation import marketing_automation
        scenario = self.start_scenario(create_parties(
            'ann', 'bob', email=address, bulk=True))
        with patch.object(
                marketing_automation, 'send_message_transactional'
                ) as send, patch.object(
                marketing_automation, 'SMTPDataManager') as datamanager:
            self.run_crons()

        self.assertEqual(self.received(), Counter())
        messages = [c.args for c in send.call_args_list]
        self.assertEqual(
            sorted(m['To'].addresses[0].addr_spec for m, in messages),
            [address('ann'), address('bob')])
        for message, in messages:
            self.assertIn("Read our news", message.get_body().get_content())
        self.assertEqual(
            {c.kwargs['datamanager'] for c in send.call_args_list},
            {datamanager.return_value})
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob'])

    def check_refused_temporarily(self, at):
        ann, bob, cid = create_parties(
            'ann', 'bob', 'cid', email=address, bulk=True)
        scenario = self.start_scenario([ann, bob, cid])
        self.smtp.refuse(address('bob'), 451, at=at)

        self.run_crons()

        self.assertEqual(
            self.received(), Counter({address('ann'): 1, address('cid'): 1}))
        with inspecting():
            self.assertSent(scenario, ['ann', 'cid'])
            self.assertWaiting(
                scenario, 'bob', "451 4.2.1 Mailbox busy", 1, FIRST_DELAY)

        # the next run is too early
        self.smtp.refuse(address('bob'), None, at=at)
        self.process()
        self.assertNotIn(address('bob'), self.received())

        self.retry_now(scenario)
        self.process()
        self.assertEqual(self.received(), Counter({
                    address('ann'): 1, address('bob'): 1, address('cid'): 1}))
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob', 'cid'])

    def test_recipient_refused_temporarily(self):
        "A 4xx to RCPT keeps one email for later, the others go"
        self.check_refused_temporarily('RCPT')

    def test_message_refused_temporarily(self):
        "A 4xx to the end of DATA keeps one email for later, the others go"
        self.check_refused_temporarily('DATA')

    def check_refused_permanently(self, at, code, error):
        ann, bob, cid = create_parties(
            'ann', 'bob', 'cid', email=address, bulk=True)
        scenario = self.start_scenario([ann, bob, cid])
        self.smtp.refuse(address('bob'), code, at=at)

        self.run_crons()

        expected = Counter({address('ann'): 1, address('cid'): 1})
        self.assertEqual(self.received(), expected)
        with inspecting():
            self.assertSent(scenario, ['ann', 'cid'])
            self.assertFailed(scenario, 'bob', error)

        # it is never tried again, even once the server would take it
        self.smtp.refuse(address('bob'), None, at=at)
        self.run_crons()
        self.run_crons()
        self.assertEqual(self.received(), expected)
        with inspecting():
            self.assertFailed(scenario, 'bob', error)

    def test_recipient_refused_permanently(self):
        "A 5xx to RCPT is written on the entry, the others go"
        self.check_refused_permanently(
            'RCPT', 550, "550 5.1.1 No such user here")

    def test_message_refused_permanently(self):
        "A 5xx to the end of DATA is written on the entry, the others go"
        self.check_refused_permanently(
            'DATA', 554, "554 5.1.1 No such user here")

    def test_server_closes_the_connection(self):
        "A 421 that closes the connection delays only its own recipient"
        ann, bob, cid = create_parties(
            'ann', 'bob', 'cid', email=address, bulk=True)
        scenario = self.start_scenario([ann, bob, cid])
        self.smtp.refuse(address('ann'), 451)
        self.smtp.refuse(address('bob'), 421)

        self.run_crons()

        # the next message goes through a new connection
        self.assertEqual(self.received(), Counter({address('cid'): 1}))
        with inspecting():
            self.assertSent(scenario, ['cid'])
            for name, code in [('ann', '451'), ('bob', '421')]:
                self.assertWaiting(scenario, name, code, 1, FIRST_DELAY)

        self.smtp.refuse(address('ann'), None)

        self.smtp.refuse(address('bob'), None)
        self.retry_now(scenario)
        self.process()
        self.assertEqual(self.received(), Counter({
                    address('ann'): 1, address('bob'): 1, address('cid'): 1}))
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob', 'cid'])

    def test_server_stalls(self):
        "A server silent past the timeout is a transient failure"
        ann, bob = create_parties('ann', 'bob', email=address, bulk=True)
        scenario = self.start_scenario([ann, bob])
        # it takes the first message but answers too late
        self.smtp.stall = 1.5

        self.run_crons()

        received = self.smtp.received()
        self.assertEqual(
            [m.rcpt_tos for m in received], [[address('ann')]])
        with inspecting():
            for name in ['ann', 'bob']:
                self.assertWaiting(
                    scenario, name, "timed out", 1, FIRST_DELAY)

        self.smtp.stall = 0
        self.retry_now(scenario)
        self.process()

        # the message in flight went twice, as the same message
        self.assertEqual(
            self.received(), Counter({address('ann'): 2, address('bob'): 1}))
        first, second = self.smtp.to(address('ann'))
        self.assertEqual(message_id(first), message_id(second))
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob'])

    @unittest.skipIf(backend.name == 'sqlite', SHARED_DATABASE)
    def test_lease_outlasts_a_slow_server(self):
        "A batch that takes longer than its lease keeps it to the end"
        names = ['s%02d' % i for i in range(10)]
        scenario = self.start_scenario(create_parties(
            *names, email=address, bulk=True))
        self.trigger()
        expired = []

        def look(received):
            # what another run would see while the server takes a message
            with inspecting():
                expired.extend(
                    name for name, email in self.emails(scenario).items()
                    if email.state == 'pending'
                    and email.next_attempt <= now())

        self.smtp.on_message = look
        self.smtp.stall = 0.3
        with patch.object(
                marketing_automation_email, 'LEASE', dt.timedelta(seconds=2)):
            self.process()

        self.assertEqual(
            self.received(), Counter({address(n): 1 for n in names}))
        self.assertEqual(expired, [], msg="the lease ran out")
        with inspecting():
            self.assertSent(scenario, names)

    def test_one_failure_never_blocks_the_batch(self):
        "Each failing recipient, template or answer fails alone"
        names = [
            'ann', 'nobody', 'bad', 'gone', 'spam', 'busy', 'full', 'zoe']
        party_ids = create_parties(*names, email=address, bulk=True)
        with committed():
            Party = Pool().get('party.party')
            nobody = Party(party_ids[1])
            Party.write([nobody], {
                    'contact_mechanisms': [
                        ('delete', [m.id for m in nobody.contact_mechanisms]),
                        ],
                    })
        scenario = self.start_scenario(party_ids, {
                **NEWS,
                'email_template': (
                    "<p>${1 / 0 if record.name == 'bad' else ''}"
                    "Hello ${record.name}</p>"),
                })
        # the last one comes after every failure
        self.smtp.refuse(address('gone'), 550)
        self.smtp.refuse(address('spam'), 554, at='DATA')
        self.smtp.refuse(address('busy'), 451)
        self.smtp.refuse(address('full'), 452, at='DATA')

        self.run_crons()

        self.assertEqual(
            self.received(), Counter({address('ann'): 1, address('zoe'): 1}))
        with inspecting():
            self.assertSent(scenario, ['ann', 'zoe'])
            self.assertFailed(scenario, 'nobody', gettext(
                    'marketing_automation.msg_email_no_address',
                    party='nobody'))
            entries = self.entries(scenario)
            self.assertEqual(
                (entries['bad'].state, entries['bad'].email_sent),
                ('done', False))
            self.assertIn('ZeroDivisionError', entries['bad'].error)
            self.assertFailed(
                scenario, 'gone', "550 5.1.1 No such user here")
            self.assertFailed(
                scenario, 'spam', "554 5.1.1 No such user here")
            self.assertWaiting(
                scenario, 'busy', "451 4.2.1", 1, FIRST_DELAY)
            self.assertWaiting(
                scenario, 'full', "452 4.2.1", 1, FIRST_DELAY)

    # Processes killed or racing

    @unittest.skipIf(backend.name == 'sqlite', SHARED_DATABASE)
    def test_process_killed_while_delivering(self):
        "A process killed in the middle of a batch loses no email"
        process, = self.start_cron_processes(PROCESS)
        names = ['k%02d' % i for i in range(60)]
        scenario = self.start_scenario(create_parties(
            *names, email=address, bulk=True))
        self.trigger()
        # 50 ms for each message leaves the time to kill the process
        self.smtp.stall = 0.05

        self.go(process)
        deadline = time.monotonic() + 60
        while len(self.smtp.received()) < 15:
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail("the process sent nothing:\n" + self.output(process))
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.assertLess(
            len(self.smtp.received()), len(names),
            msg="the process was killed after its batch")

        self.smtp.stall = 0
        with inspecting():
            left = self.emails(scenario)
            self.assertTrue(left, msg="the process left nothing to do")
            # the dead process still holds the emails it took for a while
            for email in left.values():
                if email.state == 'pending':
                    self.assertGreater(email.next_attempt, now())
        self.retry_now(scenario)
        self.process()

        received = self.received()
        self.assertEqual(set(received), {address(n) for n in names})
        again = [a for a, count in received.items() if count > 1]
        self.assertLessEqual(len(again), 1, msg="more than one went again")
        for address_ in again:
            copies = self.smtp.to(address_)
            self.assertEqual(len(copies), 2)
            self.assertEqual(
                message_id(copies[0]), message_id(copies[1]))
        with inspecting():
            self.assertSent(scenario, names)

    @unittest.skipIf(backend.name == 'sqlite', ROW_LOCKS)
    def test_concurrent_trigger(self):
        "Two processes entering the same new records enter each once"
        processes = self.start_cron_processes(TRIGGER, 2)
        names = ['t%03d' % i for i in range(300)]
        scenario = self.start_scenario(create_parties(
            *names, email=address, bulk=True))

        self.go(*processes)
        for process in processes:
            self.assertFinished(process)

        with inspecting():
            Record = Pool().get('marketing.automation.record')
            records = Record.search([('scenario', '=', scenario)])
            self.assertEqual(sorted(r.record.name for r in records), names)
            self.assertEqual(sorted(self.entries(scenario)), names)

    @unittest.skipIf(backend.name == 'sqlite', ROW_LOCKS)
    def test_concurrent_process(self):
        "Two processes sending the same due emails send each once"
        processes = self.start_cron_processes(PROCESS, 2)
        names = ['p%03d' % i for i in range(200)]
        scenario = self.start_scenario(create_parties(
            *names, email=address, bulk=True))
        self.trigger()

        self.go(*processes)
        for process in processes:
            self.assertFinished(process)

        self.assertEqual(
            self.received(), Counter({address(n): 1 for n in names}))
        with inspecting():
            self.assertSent(scenario, names)

    # Without workers

    def test_cron_delivers_before_it_returns(self):
        "Without workers, one run of the crons sends the emails it made due"
        scenario = self.start_scenario(create_parties(
            'ann', 'bob', email=address, bulk=True))
        with committed():
            Cron = Pool().get('ir.cron')
            mine = Cron.search([('method', 'in', [TRIGGER, PROCESS])])
            self.assertEqual(len(mine), 2)
            Cron.write(mine, {'next_call': now() - dt.timedelta(minutes=1)})
            Cron.write(Cron.search([('id', 'not in', mine)]), {
                    'next_call': now() + dt.timedelta(days=1),
                    })

        # as trytond-cron runs the crons that are due
        Pool(DB_NAME).get('ir.cron').run(DB_NAME)

        self.assertEqual(
            self.received(), Counter({address('ann'): 1, address('bob'): 1}))
        with inspecting():
            self.assertSent(scenario, ['ann', 'bob'])
