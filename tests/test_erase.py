# SPDX-License-Identifier: GPL-3.0-or-later
"""A party's personal data in the scenarios: erased with the party, and
forgotten once it served.

A recipient goes through scenarios as on a real site: emails received by a
real SMTP server, a click and an open from a browser, an email that waits in
the outbox, an unsubscription.  Then the party is erased with trytond's
*Erase* wizard, and every table of the database is searched for its name,
its address and the UUID of its record.  The figures of the scenarios must
not move, nor by the purge of the old messages and tracked links, which the
tests run with the clock of the module moved, never slept.
"""
import datetime as dt
from unittest import mock

from trytond import backend
from trytond.modules.marketing_automation import tools as module_tools
from trytond.pool import Pool
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from .tools import (
    ONE_CLICK, Mail, SendingTestMixin, committed, create_parties,
    decide_events, human_request, inspecting, party_reference, reporting)

NAME = "Zelda Quorvex"
ADDRESS = 'zelda.quorvex@example.com'
# what is left of her anywhere, in any case, is found by this
TRACE = 'quorvex'
UNSUBSCRIBED = 'party_party-unsubscribed-marketing_automation_scenario'
LOGGER = 'trytond.modules.marketing_automation'


def welcome(children=()):
    "An email with a personal link, an unsubscribe link and its children"
    return {
        'name': "Welcome",
        'action': 'send_email',
        'email_title': "Welcome ${record.name}",
        'email_template': (
            '<p>Hello ${record.name},</p>'
            '<p><a href="https://shop.example.com/offers'
            '?for=${record.name.replace(\' \', \'-\')}">'
            'See our offers</a></p>'
            '<p><a href="unsubscribe">Unsubscribe</a></p>'),
        'children': [('create', list(children))],
        }


THANKS = {
    'name': "Thanks",
    'on': 'email_clicked',
    'action': 'send_email',
    'email_title': "Thank you, ${record.name}",
    'email_template': '<p>We are glad you came.</p>',
    }
LATER = {
    'name': "Later",
    'delay': dt.timedelta(days=30),
    'action': 'send_email',
    'email_title': "A month later, ${record.name}",
    'email_template': '<p>News.</p>',
    }
FIGURES = {
    'marketing.automation.scenario': [
        'record_count', 'record_count_blocked', 'block_rate'],
    'marketing.automation.activity': [
        'record_count', 'email_sent', 'email_opened', 'email_clicked',
        'email_open_rate', 'email_click_rate', 'email_click_through_rate',
        'email_machine', 'email_proxy_opened', 'email_capped'],
    }


def database_rows():
    """Every row of every table of the database, as (table, column, value)
    with the value as text"""
    cursor = Transaction().connection.cursor()
    if backend.name == 'sqlite':
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE'")
    tables = [t for t, in cursor.fetchall()]
    for table in tables:
        cursor.execute('SELECT * FROM "%s"' % table)
        columns = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            for column, value in zip(columns, row):
                if isinstance(value, memoryview):
                    value = bytes(value)
                if isinstance(value, bytes):
                    value = value.decode('latin-1')
                if value is not None:
                    yield table, column, str(value)


def traces(*needles):
    """Where the needles are found in the database, ignoring the case,
    but in the tables of the party module, which erases them itself"""
    needles = [n.lower() for n in needles]
    with inspecting():
        return sorted({(table, column)
                for table, column, value in database_rows()
                if any(n in value.lower() for n in needles)
                and (not table.startswith('party_')
                    or table == UNSUBSCRIBED)})


class _ScenarioTestMixin(SendingTestMixin):
    "A database of its own, a mail server, and the steps of a marketer"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('marketing', 'frequency_cap'): '10/day',
                })

    def add_address(self, party_id, address):
        ContactMechanism = Pool().get('party.contact_mechanism')
        ContactMechanism.create([{
                    'party': party_id, 'type': 'email', 'value': address,
                    }])

    def start_scenario(self, name, party_ids, activities, **values):
        return self.running_scenario(
            name, [('id', 'in', party_ids)], activities, **values)

    def mail_to(self, address, subject):
        mails = [Mail(m) for m in self.smtp.to(address)]
        mail, = [m for m in mails if m['Subject'].startswith(subject)]
        return mail

    def entries(self, scenario_id):
        "The state of the entries of the scenario, by activity and record"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        return {
            (e.activity.name, e.record.id): e.state
            for e in RecordActivity.search([
                    ('record.scenario', '=', scenario_id)])}

    def figures(self):
        "What the marketer reads of the scenarios and their activities"
        with inspecting():
            pool = Pool()
            result = {}
            for model, names in FIGURES.items():
                Model = pool.get(model)
                result[model] = sorted(
                    Model.search_read([], fields_names=names),
                    key=lambda r: r['id'])
            for name in ['scenario', 'activity']:
                # the figures, not when the database last computed them
                result[name] = [
                    {k: v for k, v in row.items() if k != 'last_modified_at'}
                    for row in reporting(name)]
            return result

    def assertClientError(self, response, msg=None):
        self.assertGreaterEqual(response.status_code, 400, msg=msg)
        self.assertLess(response.status_code, 500, msg=msg)


class EraseTestCase(_ScenarioTestMixin, TestCase):
    "Erasing a party erases it from the scenarios, and keeps their figures"

    def erase(self, party_id):
        "Erase the party with the wizard of the party module"
        with committed():
            pool = Pool()
            Party = pool.get('party.party')
            Erase = pool.get('party.erase', type='wizard')
            Party.write([Party(party_id)], {'active': False})
            session_id, _, _ = Erase.create()
            Erase.execute(session_id, {'ask': {'party': party_id}}, 'erase')
            Erase.delete(session_id)

    def send_test(self, activity_id, addresses, close=True):
        """Send the email of the activity for the first record of its
        scenario as a test to the addresses, from its preview; leave the
        preview open unless close"""
        context = {
            'active_model': 'marketing.automation.activity',
            'active_id': activity_id,
            'active_ids': [activity_id],
            }
        with committed(user=0, context=context):
            Preview = Pool().get(
                'marketing.automation.activity.preview', type='wizard')
            session_id, _, _ = Preview.create()
            values = Preview.execute(session_id, {}, 'start')['view']
            values = {
                k: v for k, v in values['values'].items() if '.' not in k}
            result = Preview.execute(session_id, {'start': {
                        **values, 'test_addresses': addresses}}, 'send')
            if close:
                Preview.delete(session_id)
            return result['view']['values']['test_result']

    def test_erase_party(self):
        "Nothing of an erased party is left, and the figures do not move"
        zelda, ann = create_parties(
            (NAME, None), ("Ann Archer", 'ann@example.com'))

        # a newsletter finds Zelda without an address: its error names her
        self.start_scenario("Newsletter", [zelda], [{
                    'name': "Issue", 'action': 'send_email',
                    'email_title': "Issue", 'email_template': '<p>News</p>',
                    }])
        self.run_crons()
        with committed():
            self.add_address(zelda, ADDRESS)

        spring = self.start_scenario(
            "Spring", [zelda, ann], [welcome([THANKS, LATER])],
            unsubscribable=True)
        self.run_crons()
        mail = self.mail_to(ADDRESS, "Welcome")
        ann_mail = self.mail_to('ann@example.com', "Welcome")
        with inspecting():
            Record = Pool().get('marketing.automation.record')
            record, = Record.search([
                    ('scenario', '=', spring),
                    ('record', '=', party_reference(zelda))])
            uuid = record.uuid
            record_id = record.id

        # she opens and clicks, and her thanks waits for the mail server
        self.smtp.refuse(ADDRESS, 451)
        offer = mail.link("See our offers")
        for url in [mail.pixel, offer, ann_mail.link("See our offers")]:
            self.assertIn(
                human_request(self.client, url).status_code, {301, 302})
        decide_events()
        self.process()
        self.mail_to('ann@example.com', "Thank you")
        with inspecting():
            Email = Pool().get('marketing.automation.email')
            self.assertEqual(
                [e.address for e in Email.search([])], [ADDRESS])

        # then she unsubscribes
        unsubscribe = mail['List-Unsubscribe'].strip('<>')
        response = self.client.post(
            unsubscribe, data=ONE_CLICK,
            content_type='application/x-www-form-urlencoded')
        self.assertEqual(response.status_code, 200)

        found = {t for t, _ in traces(TRACE, uuid)}
        self.assertLessEqual(
            {'ir_email', 'ir_email_address', 'marketing_automation_email',
                'marketing_automation_record',
                'marketing_automation_record_activity', 'web_shortened_url'},
            found, msg="the search does not see what it looks for")
        with inspecting():
            pool = Pool()
            Unsubscribed = pool.get(
                'party.party-unsubscribed-marketing.automation.scenario')
            CapParty = pool.get('marketing.automation.cap.party')
            CapSlot = pool.get('marketing.automation.cap.slot')
            Event = pool.get('marketing.automation.event')
            self.assertTrue(Unsubscribed.search([('party', '=', zelda)]))
            self.assertTrue(CapSlot.search([('party', '=', zelda)]))
            self.assertTrue(Event.search([
                        ('record_activity.record', '=', record_id)]))
        before = self.figures()

        self.erase(zelda)

        self.assertEqual(traces(TRACE, uuid), [])
        self.assertEqual(self.figures(), before)
        with inspecting():
            pool = Pool()
            Record = pool.get('marketing.automation.record')
            IrEmail = pool.get('ir.email')
            self.assertEqual(
                Unsubscribed.search([('party', '=', zelda)]), [])
            self.assertEqual(CapParty.search([('party', '=', zelda)]), [])
            self.assertEqual(CapSlot.search([('party', '=', zelda)]), [])
            self.assertEqual(Event.search([
                        ('record_activity.record', '=', record_id)]), [])
            record = Record(record_id)
            self.assertEqual(
                str(record.record), 'party.party,-%s' % record_id)
            self.assertTrue(record.blocked)
            self.assertEqual(Record.search([
                        ('record', '=', party_reference(zelda))]), [])
            logged, = IrEmail.search([
                    ('marketing_automation_record', '=', record_id)])
            self.assertEqual(
                (logged.recipients, logged.subject, logged.message_id,
                    logged.addresses),
                (None, None, None, ()))
            self.assertEqual(logged.resource, record)
            # no email will go to her: what waited is cancelled
            states = self.entries(spring)
            self.assertEqual(
                [states[a, record_id] for a in ["Welcome", "Thanks", "Later"]],
                ['done', 'cancelled', 'cancelled'])
            self.assertNotIn('waiting', {
                    s for (_, r), s in states.items() if r == record_id})

        # her old links lead nowhere
        for url in [offer, mail.pixel, mail.link("Unsubscribe")]:
            self.assertClientError(self.client.get(url), msg=url)
        self.assertClientError(self.client.post(
                unsubscribe, data=ONE_CLICK,
                content_type='application/x-www-form-urlencoded'))
        self.smtp.refuse(ADDRESS, None)
        self.smtp.clear()
        self.run_crons()
        self.assertEqual(self.smtp.received(), [])
        self.assertEqual(self.figures(), before)

        # Ann is as she was
        with inspecting():
            ann_record, = Record.search([
                    ('scenario', '=', spring),
                    ('record', '=', party_reference(ann))])
            self.assertFalse(ann_record.blocked)
            self.assertEqual(
                [a.address for e in IrEmail.search([
                            ('resource', '=', party_reference(ann))])
                    for a in e.addresses],
                ['ann@example.com', 'ann@example.com'])
        response = self.client.head(ann_mail.link("See our offers"))
        self.assertEqual(response.status_code, 301)
        response = self.client.get(ann_mail.link("Unsubscribe"))
        self.assertEqual(response.status_code, 200)

    def test_erase_copies(self):
        """Nothing is left of an erased party where nothing links to her:
        the logs of the test emails to her or made for her, the faults that
        quote her, the previews left open on her, the logs of her emails
        from a scenario deleted since"""
        zelda, ann = create_parties(
            (NAME, ADDRESS), ("Ann Archer", 'ann@example.com'))

        # an email of a scenario deleted since: its log lost its record
        old = self.start_scenario("Old", [zelda], [{
                    'name': "Hello", 'action': 'send_email',
                    'email_title': "Hello ${record.name}",
                    'email_template': '<p>Hello ${record.name}</p>',
                    }])
        self.run_crons()
        self.mail_to(ADDRESS, "Hello")
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.stop([Scenario(old)])
            Scenario.delete([Scenario(old)])

        # a template that fails for everyone: the fault quotes her
        self.start_scenario("Broken", [zelda, ann], [{
                    'name': "Count", 'action': 'send_email',
                    'email_title': "Count",
                    'email_template': '<p>${int(record.name)}</p>',
                    }])
        with self.assertLogs(LOGGER, 'ERROR'):
            self.run_crons()

        # a marketer sends her email as a test, to herself and to Zelda
        # (typed in capitals), and leaves another preview of it open
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            spring, = Scenario.create([{
                        'name': "Spring", 'model': 'party.party',
                        'domain': '[["id", "=", %s]]' % zelda,
                        'activities': [('create', [welcome()])],
                        }])
            activity = spring.activities[0].id
        result = self.send_test(
            activity, 'Mary <mary@example.com>, '
            'Zelda <%s>' % ADDRESS.upper())
        self.assertNotIn("not sent", result)
        self.send_test(activity, 'mary@example.com', close=False)
        # a fault of a scenario that quotes her, as a module may write one
        with committed(), self.assertLogs(LOGGER, 'ERROR'):
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.set_faults({spring.id: "No sale for %s" % ADDRESS})

        with inspecting():
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            IrEmail = pool.get('ir.email')
            broken, = Activity.search([('name', '=', "Count")])
            self.assertIn(NAME, broken.error)
            tests = IrEmail.search([
                    ('marketing_automation_test', '=', True),
                    ('marketing_automation_activity', '=', activity),
                    ])
            self.assertEqual(
                {str(e.resource) for e in tests}, {party_reference(zelda)})
        self.assertEqual(
            {t for t, _ in traces(TRACE)}, {
                'ir_email', 'ir_email_address', 'ir_session_wizard',
                'marketing_automation_activity',
                'marketing_automation_scenario'},
            msg="the search does not see what it looks for")

        self.erase(zelda)

        self.assertEqual(traces(TRACE), [])
        with inspecting():
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            IrEmail = pool.get('ir.email')
            # the activity stays paused, its error without her
            broken = Activity(broken.id)
            self.assertEqual(
                broken.error.count('***'), 1, msg=broken.error)
            self.assertTrue(broken.waits_after_fault())
            Scenario = pool.get('marketing.automation.scenario')
            self.assertEqual(Scenario(spring.id).error, "No sale for ***")
            # the tests still count against the limit of the marketer
            tests = IrEmail.search([
                    ('marketing_automation_test', '=', True),
                    ('marketing_automation_activity', '=', activity),
                    ], order=[('id', 'ASC')])
            logged_on = 'marketing.automation.activity,%s' % activity
            self.assertEqual([
                    (e.recipients, e.subject, str(e.resource),
                        [a.address for a in e.addresses])
                    for e in tests], [
                    ('Mary <mary@example.com>', None, logged_on,
                        ['mary@example.com']),
                    (None, None, logged_on, []),
                    ('mary@example.com', None, logged_on,
                        ['mary@example.com']),
                    ])
        # Ann's entry of the broken template is as it was
        with inspecting():
            RecordActivity = Pool().get(
                'marketing.automation.record.activity')
            self.assertEqual(RecordActivity.search([
                        ('activity', '=', broken.id),
                        ('record.record', '=', party_reference(ann)),
                        ], count=True), 1)


class RetentionTestCase(_ScenarioTestMixin, TestCase):
    "The messages and the tracked links are forgotten once they served"

    def purge(self, after):
        "Run the purge cron as if it ran after the delay"
        real = module_tools.now
        with committed():
            with mock.patch.object(
                    module_tools, 'now', lambda: real() + after):
                Pool().get('marketing.automation.email').purge()

    def logged(self):
        "The subject and the recipients of the emails logged"
        with inspecting():
            IrEmail = Pool().get('ir.email')
            return sorted(
                (e.subject, e.recipients)
                for e in IrEmail.search([
                        ('marketing_automation_record', '!=', None)]))

    def links(self):
        with inspecting():
            ShortenedURL = Pool().get('web.shortened_url')
            return ShortenedURL.search([], count=True)

    def test_purge_cron(self):
        "The purge runs every day"
        with inspecting():
            Cron = Pool().get('ir.cron')
            cron, = Cron.search([
                    ('method', '=', 'marketing.automation.email|purge')])
            self.assertEqual(
                (cron.interval_number, cron.interval_type), (1, 'days'))

    def test_purge_messages_and_links(self):
        "The messages go after 30 days, the links after 400, not the figures"
        yuri, xia = create_parties(
            ("Yuri", 'yuri@example.com'), ("Xia", 'xia@example.com'))
        self.start_scenario(
            "Summer", [yuri, xia], [welcome([THANKS])])
        self.run_crons()
        mail = self.mail_to('yuri@example.com', "Welcome")
        offer = mail.link("See our offers")
        self.smtp.refuse('yuri@example.com', 451)
        self.assertEqual(human_request(self.client, offer).status_code, 301)
        decide_events()
        self.process()
        before = self.figures()
        logged = self.logged()
        self.assertEqual(logged, [
                ("Welcome Xia", 'Xia <xia@example.com>'),
                ("Welcome Yuri", 'Yuri <yuri@example.com>')])
        links = self.links()

        self.purge(dt.timedelta(days=29))
        self.assertEqual(self.logged(), logged)
        self.purge(dt.timedelta(days=31))
        self.assertEqual(self.logged(), [
                (None, 'Xia <xia@example.com>'),
                (None, 'Yuri <yuri@example.com>')])
        self.assertEqual(self.figures(), before)

        # the thanks that waits for the mail server keeps its message
        with inspecting():
            Email = Pool().get('marketing.automation.email')
            email, = Email.search([])
            self.assertTrue(email.message)
        # an answered message that its entry did not complete yet goes
        with committed():
            table = Email.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.state], ['sent'], where=table.id == email.id))
        self.purge(dt.timedelta(days=31))
        with inspecting():
            self.assertIsNone(Email(email.id).message)
        # the tracked links still work
        self.assertEqual(self.links(), links)
        self.assertEqual(self.client.head(offer).status_code, 301)

        with self.subTest("configured"):
            self.configure({('marketing', 'tracking_retention'): '100'})
            self.purge(dt.timedelta(days=99))
            self.assertEqual(self.links(), links)
            self.purge(dt.timedelta(days=101))
            self.assertEqual(self.links(), 0)
            self.assertClientError(self.client.get(offer))
            self.assertClientError(self.client.get(mail.pixel))
            with inspecting():
                Event = Pool().get('marketing.automation.event')
                events = Event.search([])
                self.assertTrue(events)
                self.assertEqual({e.url for e in events}, {None})
            self.assertEqual(self.figures(), before)
