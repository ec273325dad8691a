# SPDX-License-Identifier: GPL-3.0-or-later
"""Events people made, not machines.

Real HTTP requests reach the tracked links of emails received by a real SMTP
server: a mail gateway's scanner that follows every link (the hidden trap
included) within a second of the delivery, Apple's privacy proxy fetching
the image, and a person who clicks minutes later.  The clock of the event
ledger is moved, never slept.  The tests show which children run.
"""
import contextlib
import datetime as dt
import importlib.util
import io
import os
import shlex
import tempfile
from unittest import mock

import lxml.html

from trytond.modules.marketing_automation import tools as module_tools
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, USER, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction

from .tools import (
    BASE, BROWSER, Mail, SendingTestMixin, committed, decide_events,
    event_clock, human_request, inspecting, reporting)


class Received(Mail):
    "A received email, with all its links, the hidden one too"

    @property
    def hrefs(self):
        return [href for href, _ in self.links]

    @property
    def document(self):
        return lxml.html.document_fromstring(self.html)


def demo_links():
    "The module demo/links.py, which lists the links of a saved email"
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        'demo', 'links.py')
    spec = importlib.util.spec_from_file_location('demo_links', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SECONDS = dt.timedelta(seconds=1)
MINUTES = dt.timedelta(minutes=1)
DAYS = dt.timedelta(days=1)
APPLE_PROXY = 'Mozilla/5.0'


def email(children=()):
    "An email with two links, whose children wait for its events"
    return {
        'name': "Offer",
        'action': 'send_email',
        'email_title': "Our offer",
        'email_template': (
            '<p><a href="https://shop.example.com/a">First</a></p>'
            '<p><a href="https://shop.example.com/b">Second</a></p>'),
        'children': [('create', list(children))],
        }


CLICKED = {
    'name': "Clicked",
    'on': 'email_clicked',
    'action': 'send_email',
    'email_title': "Thanks for your click",
    'email_template': '<p>Thanks</p>',
    }
OPENED = {
    'name': "Opened",
    'on': 'email_opened',
    'action': 'send_email',
    'email_title': "Thanks for reading",
    'email_template': '<p>Thanks</p>',
    }
NOT_OPENED = {
    'name': "Not opened",
    'on': 'email_opened_not',
    'delay': dt.timedelta(days=2),
    'action': 'send_email',
    'email_title': "Did you see our offer?",
    'email_template': '<p>Reminder</p>',
    }


class EventsTestCase(SendingTestMixin, TestCase):
    "The event ledger and its rules"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending()

    def send(self, name, children=(), **values):
        """Send the offer to the party name, return its received email"""
        address = '%s.%s@example.com' % (name.lower(), self._testMethodName)
        with committed():
            pool = Pool()
            Party = pool.get('party.party')
            Scenario = pool.get('marketing.automation.scenario')
            party, = Party.create([{
                        'name': name,
                        'contact_mechanisms': [('create', [{
                                        'type': 'email', 'value': address,
                                        }])],
                        }])
            scenario, = Scenario.create([{
                        'name': '%s %s' % (name, self._testMethodName),
                        'model': 'party.party',
                        'domain': '[["id", "=", %s]]' % party.id,
                        'activities': [('create', [email(children)])],
                        **values,
                        }])
            Scenario.run([scenario])
            self.scenario = scenario.id
        self.run_crons()
        mail, = [Received(m) for m in self.smtp.to(address)]
        return mail

    def process(self, after=dt.timedelta()):
        with committed():
            with event_clock(after):
                Pool().get('marketing.automation.record.activity').process()

    def request(self, url, user_agent=BROWSER, after=SECONDS, address=None):
        "Request url with user_agent, after the delivery"
        with event_clock(after):
            environ = {'REMOTE_ADDR': address} if address else None
            return self.client.get(
                url, headers={'User-Agent': user_agent},
                environ_overrides=environ)

    def scan(self, mail, after=SECONDS):
        """Follow every link of the email, the hidden one too, and load its
        images, within a second, as the scanner of a mail gateway does with
        the User-Agent of a browser"""
        for url in mail.hrefs + mail.images:
            self.request(url, after=after)

    def entry(self, name):
        RecordActivity = Pool().get('marketing.automation.record.activity')
        entry, = RecordActivity.search([
                ('record.scenario', '=', self.scenario),
                ('activity.name', '=', name),
                ])
        return entry

    def events(self):
        "The (kind, verdict, rule) of the requests of the offer, in order"
        Event = Pool().get('marketing.automation.event')
        return [(e.kind, e.verdict, e.rule) for e in Event.search(
                [('record_activity', '=', self.entry("Offer").id)],
                order=[('at', 'ASC'), ('id', 'ASC')])]

    def test_trap_link_is_hidden(self):
        "The trap link is in the HTML, hidden, and never in the text"
        mail = self.send("Ann")
        hidden = [
            a for a in mail.document.iter('a')
            if a.get('aria-hidden') == 'true']
        self.assertEqual(len(hidden), 1)
        trap, = hidden
        self.assertEqual(trap.get('tabindex'), '-1')
        self.assertIn('display:none', trap.get('style'))
        self.assertIsNotNone(trap.get('hidden'))
        self.assertEqual(trap.text_content(), '')
        self.assertNotIn(trap.get('href'), mail.text)
        self.assertEqual(
            [t for _, t in mail.links if t], ["First", "Second"])

    def test_trap_link_leads_to_a_blank_page(self):
        """The trap link leads to a blank page of its own, not to the image:
        Tryton's own module finds the image of an email by its redirect URL
        ending in /m/empty.gif, and finds one"""
        mail = self.send("Ann")
        trap, = [
            a.get('href') for a in mail.document.iter('a')
            if a.get('aria-hidden') == 'true']
        with inspecting():
            ShortenedURL = Pool().get('web.shortened_url')
            offer = self.entry("Offer")
            images = ShortenedURL.search([
                    ('record', '=', str(offer)),
                    ('redirect_url', 'like', '%/m/empty.gif'),
                    ])
            self.assertEqual(
                [u.method for u in images],
                ['marketing.automation.record.activity|on_email_opened'])

        response = self.request(trap)
        self.assertEqual(response.status_code, 302)
        self.assertEqual(
            response.headers['Location'], BASE + '/m/empty.html')
        self.assertIn('no-store', response.headers['Cache-Control'])
        page = self.client.get(response.headers['Location'])
        self.assertEqual(page.status_code, 200)
        self.assertEqual(page.mimetype, 'text/html')
        self.assertIn('no-store', page.headers['Cache-Control'])
        self.assertEqual(
            lxml.html.document_fromstring(page.data).text_content(), '')
        # the ledger still takes the request for a machine's
        decide_events()
        with inspecting():
            self.assertEqual(self.events(), [('trap', 'machine', 'trap')])

    def test_ledger_shows_where_a_click_leads(self):
        """The ledger shows the address of the link clicked, and no address
        for the image nor the trap link"""
        mail = self.send("Ida")
        trap, = [
            a.get('href') for a in mail.document.iter('a')
            if a.get('aria-hidden') == 'true']
        for url in [mail.pixel, mail.link("Second"), trap]:
            self.request(url, after=5 * MINUTES)
        with inspecting():
            Event = Pool().get('marketing.automation.event')
            events = Event.search(
                [('record_activity', '=', self.entry("Offer").id)],
                order=[('id', 'ASC')])
            self.assertEqual([(e.kind, e.link) for e in events], [
                    ('open', None),
                    ('click', 'https://shop.example.com/b'),
                    ('trap', None)])
            self.assertEqual(Event.search([
                        ('record_activity', '=', self.entry("Offer").id),
                        ('link', 'like', '%/b'),
                        ]), events[1:2])

    def test_demo_curl_click_counts(self):
        """The curl command that the demo prints for a link, run minutes
        after the delivery, counts a click; with curl's own User-Agent it
        would be a machine's"""
        links = demo_links()
        mail = self.send("Hal", [CLICKED])
        with tempfile.NamedTemporaryFile(suffix='.eml') as file:
            file.write(mail.raw)
            file.flush()
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                links.show(file.name)
        lines = output.getvalue().splitlines()
        command = shlex.split(
            lines[lines.index('  link "First" (a click, which counts as an '
                    'open too):') + 1])
        self.assertEqual(command[0], 'curl')
        self.assertEqual(command[-1], mail.link("First"))
        user_agent = command[command.index('-A') + 1]

        self.request(command[-1], user_agent=user_agent, after=5 * MINUTES)
        decide_events()
        with inspecting():
            self.assertEqual(self.events(), [('click', 'human', 'no_sign')])
            self.assertTrue(self.entry("Offer").email_clicked)

        self.request(
            mail.link("Second"), user_agent='curl/8.5.0', after=6 * MINUTES)
        decide_events()
        with inspecting():
            self.assertEqual(
                self.events()[-1][:2], ('click', 'machine'))

    def test_scanner_then_person(self):
        """A gateway scans every link at delivery: nothing follows; the
        recipient clicks minutes later: the child of a click runs"""
        mail = self.send("Bob", [CLICKED, OPENED, NOT_OPENED])

        self.scan(mail)
        # the redirects answered at once all the same
        decide_events()
        self.process(after=10 * MINUTES)
        with inspecting():
            offer = self.entry("Offer")
            self.assertFalse(offer.email_clicked)
            self.assertFalse(offer.email_opened)
            self.assertTrue(offer.email_machine)
            self.assertEqual(self.entry("Clicked").at, None)
            self.assertEqual(self.entry("Not opened").state, 'waiting')
            self.assertEqual(
                {v for _, v, _ in self.events()}, {'machine'})
            self.assertIn(('trap', 'machine', 'trap'), self.events())
        self.assertEqual(len(self.smtp.received()), 1)

        # the recipient reads and clicks five minutes later
        self.request(mail.link("First"), after=5 * MINUTES)
        with inspecting():
            self.assertEqual(self.events()[-1], ('click', 'undecided', None))
        decide_events()
        self.process()
        with inspecting():
            offer = self.entry("Offer")
            self.assertTrue(offer.email_clicked)
            self.assertTrue(offer.email_opened)
            self.assertEqual(self.events()[-1], ('click', 'human', 'no_sign'))
            self.assertEqual(self.entry("Clicked").state, 'done')
            self.assertEqual(self.entry("Not opened").state, 'cancelled')
        subjects = sorted(Mail(m)['Subject'] for m in self.smtp.received())
        self.assertEqual(subjects, [
                "Our offer", "Thanks for reading", "Thanks for your click"])

    def test_burst_without_trap(self):
        "Several links within seconds, without the trap, are a machine's"
        # the email has two links: two make a burst here
        self.configure({('marketing', 'event_burst_links'): '2'})
        mail = self.send("Cid", [CLICKED])
        self.request(mail.link("First"), after=3 * MINUTES)
        self.request(mail.link("Second"), after=3 * MINUTES + 2 * SECONDS)
        self.request(mail.link("First"), after=3 * MINUTES + 3 * SECONDS)
        decide_events()
        with inspecting():
            verdicts = self.events()
            self.assertTrue(verdicts)
            self.assertEqual(
                {(v, r) for _, v, r in verdicts}, {('machine', 'burst')})
            self.assertFalse(self.entry("Offer").email_clicked)

    def test_click_at_delivery_waits_for_a_person(self):
        """A click within seconds of the delivery stays undecided until the
        same recipient comes back"""
        mail = self.send("Dan", [CLICKED])
        self.request(mail.link("First"), after=2 * SECONDS)
        decide_events()
        self.process(after=30 * MINUTES)
        with inspecting():
            self.assertEqual(self.events(), [('click', 'undecided', None)])
            self.assertFalse(self.entry("Offer").email_clicked)
            self.assertEqual(self.entry("Clicked").at, None)

        self.request(mail.link("Second"), after=20 * MINUTES)
        decide_events(after=30 * MINUTES)
        with inspecting():
            self.assertEqual(self.events(), [
                    ('click', 'human', 'confirmed'),
                    ('click', 'human', 'no_sign')])
            self.assertTrue(self.entry("Offer").email_clicked)

    def process_at(self, after):
        """Run the process cron after the delivery, with the clock of the
        module moved (the ledger's follows it)"""
        moment = module_tools.now() + after
        with mock.patch.object(module_tools, 'now', return_value=moment):
            self.process()

    def test_reminder_waits_for_an_undecided_open(self):
        """A click just before the reminder of the unopened email is due
        holds the reminder until the click is decided: a person's, the
        reminder is cancelled, not sent"""
        mail = self.send("Eve", [NOT_OPENED])
        self.request(mail.link("First"), after=2 * DAYS - 30 * SECONDS)

        self.process_at(2 * DAYS + 10 * SECONDS)
        with inspecting():
            self.assertEqual(self.events(), [('click', 'undecided', None)])
            # due, and held
            self.assertEqual(self.entry("Not opened").state, 'waiting')
        self.assertEqual(len(self.smtp.received()), 1)

        self.process_at(2 * DAYS + 5 * MINUTES)
        with inspecting():
            self.assertEqual(self.events(), [('click', 'human', 'no_sign')])
            self.assertEqual(self.entry("Not opened").state, 'cancelled')
        self.assertEqual(len(self.smtp.received()), 1)

    def test_reminder_not_held_by_an_unconfirmed_request(self):
        """A click at the delivery that nobody confirmed stays undecided but
        does not hold the reminder of the unopened email"""
        mail = self.send("Fay", [NOT_OPENED])
        self.request(mail.link("First"), after=2 * SECONDS)

        self.process_at(2 * DAYS + 10 * SECONDS)
        with inspecting():
            self.assertEqual(self.events(), [('click', 'undecided', None)])
            self.assertEqual(self.entry("Not opened").state, 'done')
        self.assertEqual(
            sorted(Mail(m)['Subject'] for m in self.smtp.received()),
            ["Did you see our offer?", "Our offer"])

    def test_reminder_of_an_event_of_another_action(self):
        """A reminder waiting for an event that no request of the ledger
        makes (an event of another module's action) is held by nothing"""
        from trytond.modules.marketing_automation import marketing_automation
        mail = self.send("Gil", [NOT_OPENED])
        self.request(mail.link("First"), after=2 * DAYS - 30 * SECONDS)
        with Transaction().start(DB_NAME, USER) as transaction:
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            RecordActivity = pool.get('marketing.automation.record.activity')
            reminder = self.entry("Not opened")
            activity = Activity.__table__()
            cursor = transaction.connection.cursor()
            cursor.execute(*activity.update(
                    [activity.event], ['visit_confirmed'],
                    where=activity.id == reminder.activity.id))
            entry = marketing_automation.Entry(
                reminder.id, reminder.record.id, str(reminder.record.record))
            now = module_tools.now() + 2 * DAYS + 10 * SECONDS
            due = RecordActivity._filter_due(
                {reminder.activity.id: [entry]}, now)
            self.assertEqual(dict(due), {reminder.activity.id: [entry]})
            transaction.rollback()

    def test_privacy_proxy_opens(self):
        """Apple's proxy fetches the image at delivery: it is no open, unless
        the scenario counts them"""
        mail = self.send("Eve", [OPENED, NOT_OPENED])
        self.request(mail.pixel, user_agent=APPLE_PROXY, after=30 * SECONDS)
        decide_events()
        with inspecting():
            self.assertEqual(self.events(), [('open', 'proxy', 'proxy')])
            offer = self.entry("Offer")
            self.assertFalse(offer.email_opened)
            self.assertTrue(offer.email_proxy_opened)
            self.assertEqual(self.entry("Not opened").state, 'waiting')
            self.assertEqual(self.entry("Opened").at, None)

        mail = self.send("Fay", [OPENED, NOT_OPENED], proxy_opens=True)
        self.request(mail.pixel, user_agent=APPLE_PROXY, after=30 * SECONDS)
        with inspecting():
            self.assertTrue(self.entry("Offer").email_opened)
            self.assertEqual(self.entry("Not opened").state, 'cancelled')

    def test_libraries_are_machines(self):
        "A request without a user agent or from a library is a machine's"
        mail = self.send("Gus", [CLICKED])
        self.request(mail.link("First"), user_agent='', after=5 * MINUTES)
        self.request(
            mail.link("Second"), user_agent='curl/8.5.0', after=6 * MINUTES)
        decide_events()
        with inspecting():
            self.assertEqual(self.events(), [
                    ('click', 'machine', 'user_agent'),
                    ('click', 'machine', 'user_agent')])
            self.assertFalse(self.entry("Offer").email_clicked)

    def test_hammered_link(self):
        """A stranger hammering a link gets every redirect, and the ledger
        counts the extra requests instead of growing"""
        mail = self.send("Hal")
        for _ in range(30):
            response = self.request(mail.link("First"), after=MINUTES)
            self.assertEqual(response.status_code, 301)
        with inspecting():
            Event = Pool().get('marketing.automation.event')
            events = Event.search(
                [('record_activity', '=', self.entry("Offer").id)])
            self.assertEqual(len(events), 10)
            self.assertEqual(sum(e.repeats for e in events), 20)

    def test_no_address_is_kept(self):
        "The ledger keeps a key of the network, never the address"
        mail = self.send("Ida")
        for address in ['203.0.113.7', '203.0.113.200', '198.51.100.7']:
            self.request(
                mail.link("First"), after=5 * MINUTES, address=address)
        with inspecting():
            Event = Pool().get('marketing.automation.event')
            keys = [e.network for e in Event.search(
                    [('record_activity', '=', self.entry("Offer").id)],
                    order=[('id', 'ASC')])]
            self.assertEqual(keys[0], keys[1])
            self.assertNotEqual(keys[0], keys[2])
            for key in keys:
                self.assertNotIn('203.0', key)
                self.assertNotIn('198.51', key)

    def test_classification_turned_off(self):
        "A site that wants every request counted gets it at once"
        self.configure({('marketing', 'event_classification'): 'False'})
        mail = self.send("Jo", [CLICKED])
        self.request(mail.link("First"), user_agent='curl/8.5.0')
        with inspecting():
            self.assertTrue(self.entry("Offer").email_clicked)
            self.assertIsNotNone(self.entry("Clicked").at)
            self.assertEqual(
                self.events(), [('click', 'machine', 'user_agent')])

    def test_statistics_and_purge(self):
        """The activity counts the emails reached by machines and proxies
        beside the human events, and the counts outlive the ledger"""
        mail = self.send("Kim")
        self.scan(mail)
        human_request(self.client, mail.link("Second"), after=5 * MINUTES)
        decide_events()
        with inspecting():
            activity = self.entry("Offer").activity
            counts = (
                activity.email_sent, activity.email_clicked,
                activity.email_machine, activity.email_proxy_opened)
        self.assertEqual(counts, (1, 1, 1, 0))
        with inspecting():
            row, = reporting(
                'activity', [('activity', '=', activity.id)],
                period='day')
            self.assertEqual(
                (row['email_sent'], row['email_clicked'],
                    row['email_machine'], row['email_proxy_opened']),
                (1, 1, 1, 0))

        with committed():
            Event = Pool().get('marketing.automation.event')
            with event_clock(dt.timedelta(days=401)):
                Event.purge()
        with inspecting():
            Event = Pool().get('marketing.automation.event')
            offer = self.entry("Offer")
            self.assertEqual(
                Event.search([('record_activity', '=', offer.id)]), [])
            activity = offer.activity
            self.assertEqual(
                (activity.email_clicked, activity.email_machine), (1, 1))
