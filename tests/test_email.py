# SPDX-License-Identifier: GPL-3.0-or-later
"""The emails of a scenario as their recipients get them and as the marketer
sees them afterwards.

Every test runs the crons in committed transactions, lets a real SMTP server
on the loopback receive the messages, reads them as a mail client does, and
follows their links as HTTP requests to trytond's WSGI application.
"""
import datetime as dt
import os
import secrets
import time
import uuid
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import lxml.html

from trytond.i18n import gettext
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, USER, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction

from .tools import (
    BASE, DB64, GOODBYE, OFFER, ONE_CLICK, REMINDER, THANKS, TRACKED,
    EmailTestMixin, Mail, b64, committed, create_parties, decide_events,
    human_request, inspecting, message, page_text, party_reference, run_queue,
    welcome)


class EmailTestCase(EmailTestMixin, TestCase):
    "The emails of marketing scenarios, from the cron to the recipient"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')
        with committed(user=0):
            cls.load_french()

    @classmethod
    def load_french(cls):
        "Make French a language of the database with the module's texts"
        pool = Pool()
        Lang = pool.get('ir.lang')
        Translation = pool.get('ir.translation')
        french, = Lang.search([('code', '=', 'fr')])
        Lang.write([french], {'translatable': True})
        from trytond.modules import marketing_automation
        path = os.path.join(
            os.path.dirname(marketing_automation.__file__),
            'locale', 'fr.po')
        # the French test fails on its own when the file is missing
        if os.path.exists(path):
            Translation.translation_import(
                'fr', 'marketing_automation', [path])

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('email', 'from'): 'root@server.example.com',
                })

    # Setting things up, as a marketer and as the crons

    def make_due(self, scenario_id, party_id, activity_name):
        with committed():
            RecordActivity = Pool().get('marketing.automation.record.activity')
            RecordActivity.write([self.entry(
                        scenario_id, party_id, activity_name)], {
                    'at': dt.datetime.now() - dt.timedelta(minutes=1),
                    })

    def retry_deliveries_now(self):
        "Let the emails waiting for another attempt go at the next process"
        with committed():
            Email = Pool().get('marketing.automation.email')
            emails = Email.search([('state', '=', 'pending')])
            self.assertTrue(emails, msg="no email waits for delivery")
            Email.write(emails, {
                    'next_attempt': dt.datetime.now() - dt.timedelta(
                        minutes=1),
                    })

    # Looking at the database, as the marketer does (inside a transaction)

    def assertClientError(self, response, msg=None):
        self.assertGreaterEqual(response.status_code, 400, msg=msg)
        self.assertLess(response.status_code, 500, msg=msg)

    # The email

    def test_one_email_per_party_with_an_address(self):
        "Each party with an address gets its email; the others are reported"
        ann, bob, emile = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Bob Baker", None),
            ("Émile Zola", 'emile@exämple.com'))
        scenario = self.start_scenario(
            [ann, bob, emile], [welcome([THANKS, REMINDER])])

        self.run_crons()

        received = self.smtp.received()
        self.assertEqual(
            sorted(r for m in received for r in m.rcpt_tos),
            ['ann@example.com', 'emile@xn--exmple-cua.com'])

        mail = self.mail_to('ann@example.com')
        self.assertEqual(mail.envelope_from, 'news@example.com')
        sender, = mail['From'].addresses
        self.assertEqual(
            (sender.display_name, sender.addr_spec),
            ("Marketing Team", 'news@example.com'))
        to, = mail['To'].addresses
        self.assertEqual(
            (to.display_name, to.addr_spec), ("Ann Archer", 'ann@example.com'))
        self.assertEqual(mail['Subject'], "Welcome Ann Archer")
        self.assertEqual(mail['Auto-Submitted'], 'auto-generated')
        self.assertEqual(mail['Content-Language'], 'en')
        self.assertEqual(mail['List-Unsubscribe-Post'], ONE_CLICK)
        self.assertEqual(
            mail.message.get_content_type(), 'multipart/alternative')
        self.assertEqual(
            [p.get_content_type() for p in mail.message.iter_parts()],
            ['text/plain', 'text/html'])
        self.assertIn("Hello Ann Archer,", mail.text)
        self.assertIn("Hello Ann Archer,", mail.html)

        # the idn domain travels as IDNA, the name as an encoded word
        emile_mail = self.mail_to('emile@xn--exmple-cua.com')
        to, = emile_mail['To'].addresses
        self.assertEqual(
            (to.display_name, to.username, to.domain),
            ("Émile Zola", 'emile', 'xn--exmple-cua.com'))
        self.assertEqual(emile_mail['Subject'], "Welcome Émile Zola")
        self.assertIn("Hello Émile Zola,", emile_mail.html)
        self.assertTrue(emile_mail.raw.isascii(), msg="8-bit message")

        with inspecting():
            pool = Pool()
            IrEmail = pool.get('ir.email')
            Activity = pool.get('marketing.automation.activity')
            root, = Activity.search([
                    ('parent', '=',
                        'marketing.automation.scenario,%s' % scenario)])
            for party, mail in [(ann, mail), (emile, emile_mail)]:
                record = self.record(scenario, party)
                entry = self.entry(scenario, party, "Welcome")
                self.assertEqual(
                    (entry.state, entry.email_sent, entry.error),
                    ('done', True, None))
                self.assertEqual(
                    mail['List-Unsubscribe'],
                    f'<{BASE}/m/{DB64}/unsubscribe?r={record.uuid}>')
                logged, = IrEmail.search([
                        ('resource', '=', party_reference(party)),
                        ])
                self.assertEqual(logged.subject, mail['Subject'])
                self.assertEqual(logged.message_id, mail['Message-ID'])
                self.assertEqual(logged.marketing_automation_activity, root)
                self.assertEqual(logged.marketing_automation_record, record)
                self.assertIn(mail.envelope_to[0], logged.recipients)
                self.assertEqual(
                    [a.address for a in logged.addresses], mail.envelope_to)
                # the children wait for the events of this email
                self.assertEqual(
                    self.entry(scenario, party, "Thanks").at, None)
                self.assertEqual(
                    self.entry(scenario, party, "Reminder").state, 'waiting')

            entry = self.entry(scenario, bob, "Welcome")
            self.assertEqual(entry.state, 'done')
            self.assertFalse(entry.email_sent)
            self.assertEqual(entry.error, gettext(
                    'marketing_automation.msg_email_no_address',
                    party="Bob Baker"))
            self.assertFalse(IrEmail.search([
                        ('resource', '=', party_reference(bob)),
                        ]))

    def test_links_of_the_email(self):
        "Every web link is tracked, with a token of its own"
        ann, bob = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Bob Baker", 'bob@example.com'))
        scenario = self.start_scenario([ann, bob], [welcome()])

        self.run_crons()

        ann_mail = self.mail_to('ann@example.com')
        bob_mail = self.mail_to('bob@example.com')
        tokens = []
        for party, mail in [(ann, ann_mail), (bob, bob_mail)]:
            with inspecting():
                uuid_ = self.record(scenario, party).uuid
            offer = mail.link("See our offers")
            self.assertRegex(offer, TRACKED)
            self.assertIn(offer, mail.text)
            self.assertEqual(
                mail.link("Write to us"), 'mailto:help@example.com')
            self.assertEqual(
                mail.link("Unsubscribe"),
                f'{BASE}/m/{DB64}/unsubscribe?r={uuid_}')
            leave = urlsplit(mail.link("Leave for good"))
            self.assertEqual(
                leave._replace(query='').geturl(),
                f'{BASE}/m/{DB64}/unsubscribe')
            query = parse_qs(leave.query)
            self.assertEqual(query['r'], [uuid_])
            self.assertEqual(query['next'], [GOODBYE])
            self.assertTrue(query['s'][0])
            self.assertRegex(mail.pixel, TRACKED)
            tokens += [
                TRACKED.match(offer)['token'],
                TRACKED.match(mail.pixel)['token']]
            for part in [mail.html, mail.text]:
                self.assertNotIn(
                    'shop.example.com', part,
                    msg="the offer is reachable without tracking")
        self.assertEqual(len(set(tokens)), len(tokens))
        for token in tokens:
            # at least 96 random bits
            self.assertGreaterEqual(len(token) * 6, 96)

        # the links are web.shortened_url records that know where they go
        with inspecting():
            ShortenedURL = Pool().get('web.shortened_url')
            entry = self.entry(scenario, ann, "Welcome")
            urls = {
                u.shortened_url: u for u in ShortenedURL.search([
                        ('record', '=', str(entry)),
                        ])}
            offer = urls[ann_mail.link("See our offers")]
            self.assertEqual(offer.redirect_url, OFFER)
            self.assertEqual(
                offer.method,
                'marketing.automation.record.activity|on_email_clicked')
            pixel = urls[ann_mail.pixel]
            self.assertEqual(
                pixel.method,
                'marketing.automation.record.activity|on_email_opened')

    def test_follow_links(self):
        "Clicks and opens move the recipients on; HEAD requests do not"
        ann, bob, cid = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Bob Baker", 'bob@example.com'),
            ("Cid Cooper", 'cid@example.com'))
        scenario = self.start_scenario(
            [ann, bob, cid], [welcome([THANKS, REMINDER])])
        self.run_crons()

        # Ann clicks the offer: the click counts once no scanner's trap hit
        # can come any more
        offer = self.mail_to('ann@example.com').link("See our offers")
        before = dt.datetime.now().replace(microsecond=0)
        response = human_request(self.client, offer)
        self.assertEqual(response.status_code, 301)
        self.assertEqual(response.headers['Location'], OFFER)
        with inspecting():
            entry = self.entry(scenario, ann, "Welcome")
            self.assertFalse(entry.email_clicked)
        decide_events()
        with inspecting():
            entry = self.entry(scenario, ann, "Welcome")
            self.assertTrue(entry.email_clicked)
            self.assertTrue(entry.email_opened)
            thanks = self.entry(scenario, ann, "Thanks")
            self.assertEqual(thanks.state, 'waiting')
            self.assertIsNotNone(thanks.at)
            self.assertGreaterEqual(thanks.at, before)
            self.assertLessEqual(thanks.at, dt.datetime.now())
            self.assertEqual(
                self.entry(scenario, ann, "Reminder").state, 'cancelled')

        # Bob's client loads the images
        response = human_request(
            self.client, self.mail_to('bob@example.com').pixel)
        decide_events()
        self.assertEqual(response.status_code, 302)
        self.assertEqual(response.headers['Location'], BASE + '/m/empty.gif')
        self.assertIn('no-store', response.headers['Cache-Control'])
        self.assertIn('no-cache', response.headers['Cache-Control'])
        with inspecting():
            entry = self.entry(scenario, bob, "Welcome")
            self.assertTrue(entry.email_opened)
            self.assertFalse(entry.email_clicked)
            self.assertEqual(
                self.entry(scenario, bob, "Thanks").at, None)
            self.assertEqual(
                self.entry(scenario, bob, "Reminder").state, 'cancelled')

        # a link scanner probes Cid's links
        cid_mail = self.mail_to('cid@example.com')
        before = self.snapshot()
        for url in [cid_mail.link("See our offers"), cid_mail.pixel]:
            response = self.client.head(url)
            self.assertIn(response.status_code, {301, 302})
        self.assertEqual(self.snapshot(), before)
        with inspecting():
            entry = self.entry(scenario, cid, "Welcome")
            self.assertFalse(entry.email_opened)
            self.assertFalse(entry.email_clicked)
            self.assertEqual(
                self.entry(scenario, cid, "Reminder").state, 'waiting')

        response = self.client.get('/m/empty.gif')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, 'image/gif')
        self.assertTrue(response.data.startswith(b'GIF8'))
        self.assertIn('no-store', response.headers['Cache-Control'])

        # only Ann gets the follow-up of a click
        self.smtp.clear()
        self.process()
        received = self.smtp.received()
        self.assertEqual(
            [m.rcpt_tos for m in received], [['ann@example.com']])
        thanks = Mail(received[0])
        self.assertEqual(
            thanks['Subject'], "Thank you for your visit, Ann Archer")
        self.assertIn("We are glad you came.", thanks.html)
        with inspecting():
            entry = self.entry(scenario, ann, "Thanks")
            self.assertEqual((entry.state, entry.email_sent), ('done', True))

        # a second click is counted but changes nothing else
        response = human_request(self.client, offer)
        self.assertEqual(response.status_code, 301)
        decide_events()
        self.smtp.clear()
        self.process()
        self.assertEqual(self.smtp.received(), [])

    def test_message_id(self):
        "The Message-ID names the entry: a resent message keeps it"
        ann, bob = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Bob Baker", 'bob@example.com'))
        scenario = self.start_scenario([ann, bob], [welcome([THANKS])])
        # the server takes the message but answers too late
        self.smtp.stall = 2
        self.configure({('email', 'uri'): self.smtp.uri(timeout=1)})

        self.run_crons()

        with inspecting():
            for party in [ann, bob]:
                entry = self.entry(scenario, party, "Welcome")
                self.assertEqual(entry.state, 'waiting')
                self.assertFalse(entry.email_sent)
                self.assertTrue(entry.error)
        self.smtp.stall = 0
        self.retry_deliveries_now()
        self.process()
        self.smtp.wait_for(3)

        ann_mails = self.mails_to('ann@example.com')
        bob_mail = self.mail_to('bob@example.com')
        self.assertEqual(len(ann_mails), 2, msg="no message was resent")
        first, second = ann_mails
        self.assertEqual(first['Message-ID'], second['Message-ID'])
        self.assertNotEqual(first['Message-ID'], bob_mail['Message-ID'])
        with inspecting():
            uuid_ = self.record(scenario, ann).uuid
            self.assertIn(uuid_, first['Message-ID'])
            self.assertRegex(first['Message-ID'], r'^<[^<>@\s]+@[^<>@\s]+>$')
            entry = self.entry(scenario, ann, "Welcome")
            self.assertEqual(
                (entry.state, entry.email_sent, entry.error),
                ('done', True, None))

        # the follow-up of the same record is another message
        self.smtp.clear()
        human_request(self.client, first.link("See our offers"))
        decide_events()
        self.process()
        thanks = self.mail_to('ann@example.com')
        self.assertIn(uuid_, thanks['Message-ID'])
        self.assertNotEqual(thanks['Message-ID'], first['Message-ID'])

    def test_template_failing_for_one_recipient(self):
        "A template that fails for one recipient does not stop the others"
        ann, bad, cid = create_parties(
            ("Ann", 'ann@example.com'),
            ("Bad", 'bad@example.com'),
            ("Cid", 'cid@example.com'))
        scenario = self.start_scenario([ann, bad, cid], [{
                    'name': "Welcome",
                    'action': 'send_email',
                    'email_title': "Hello ${record.name.upper()}",
                    'email_template': (
                        "<p>${1/0 if record.name == 'Bad' else ''}"
                        "Our news</p>"),
                    }])

        self.run_crons()

        self.assertEqual(
            sorted(r for m in self.smtp.received() for r in m.rcpt_tos),
            ['ann@example.com', 'cid@example.com'])
        self.assertEqual(
            self.mail_to('cid@example.com')['Subject'], "Hello CID")
        with inspecting():
            entry = self.entry(scenario, bad, "Welcome")
            self.assertEqual(entry.state, 'done')
            self.assertFalse(entry.email_sent)
            self.assertIn('ZeroDivisionError', entry.error)
            for party in [ann, cid]:
                entry = self.entry(scenario, party, "Welcome")
                self.assertEqual(
                    (entry.state, entry.email_sent, entry.error),
                    ('done', True, None))

    # Delivery

    def test_rolled_back_work_sends_nothing(self):
        "No email leaves for work that is rolled back"
        ann, = create_parties(("Ann", 'ann@example.com'))
        scenario = self.start_scenario([ann], [welcome()])

        with Transaction().start(DB_NAME, USER) as transaction:
            pool = Pool()
            pool.get('marketing.automation.scenario').trigger()
            pool.get('marketing.automation.record.activity').process()
            transaction.rollback()
        run_queue()

        self.assertEqual(self.smtp.received(), [])
        with inspecting():
            self.assertIsNone(self.record(scenario, ann))

    def test_delivered_at_once(self):
        "An email rendered late in a second goes with the delivery after it"
        ann, = create_parties(("Ann", 'ann@example.com'))
        scenario = self.start_scenario([ann], [welcome()])
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
        # a time rounded up to the next second would wait for the next cron
        while dt.datetime.now().microsecond < 500_000:
            time.sleep(0.01)

        self.process()

        self.assertEqual(len(self.mails_to('ann@example.com')), 1)
        with inspecting():
            entry = self.entry(scenario, ann, "Welcome")
            self.assertEqual(
                (entry.state, entry.email_sent), ('done', True))

    # Unsubscribe

    def test_unsubscribe_confirmation(self):
        "The link asks before it unsubscribes; the form's POST does it"
        scenario, (ann,), (mail,) = self.send_welcome(
            ("Ann", 'ann@example.com'))
        url = mail.link("Unsubscribe")

        before = self.snapshot()
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, 'text/html')
        self.assertIn('no-store', response.headers['Cache-Control'])
        page = lxml.html.document_fromstring(response.get_data(as_text=True))
        form, = page.iter('form')
        self.assertEqual(form.get('method').lower(), 'post')
        self.assertIn(
            message('msg_unsubscribe_confirm'),
            page_text(response))
        response = self.client.head(url)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(self.is_blocked(scenario, ann))

        response = self.client.post(urljoin(url, form.get('action')))
        self.assertEqual(response.status_code, 200)
        self.assertIn(
            message('msg_unsubscribe_done'),
            page_text(response))
        self.assertTrue(self.is_blocked(scenario, ann))

        # the reminder that was due is not sent
        self.make_due(scenario, ann, "Reminder")
        self.smtp.clear()
        self.process()
        self.assertEqual(self.smtp.received(), [])
        with inspecting():
            self.assertEqual(
                self.entry(scenario, ann, "Reminder").state, 'waiting')

    def test_unsubscribe_one_click(self):
        "The List-Unsubscribe header works with an RFC 8058 one-click POST"
        scenario, (ann, bob), (mail, _) = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        url = mail['List-Unsubscribe'].strip('<>')

        for attempt in range(2):
            response = self.client.post(
                url, data=ONE_CLICK,
                content_type='application/x-www-form-urlencoded')
            self.assertGreaterEqual(response.status_code, 200)
            self.assertLess(response.status_code, 300)
            self.assertTrue(self.is_blocked(scenario, ann))
        self.assertFalse(self.is_blocked(scenario, bob))

        # the page of a blocked record is still there
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)

    def test_unsubscribe_next(self):
        "Only the next URL that the server signed is followed"
        scenario, (ann, bob), (mail, bob_mail) = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        leave = mail.link("Leave for good")
        query = parse_qs(urlsplit(leave).query)
        uuid_, signature = query['r'][0], query['s'][0]
        bob_query = parse_qs(urlsplit(bob_mail.link("Leave for good")).query)
        unsubscribe = f'{BASE}/m/{DB64}/unsubscribe?'

        def link(**query):
            return unsubscribe + urlencode(query)

        forged = [
            ('unsigned', link(r=uuid_, next=GOODBYE)),
            ('forged', link(
                    r=uuid_, next=GOODBYE,
                    s=signature[:-2] + ('AA' if signature[-2:] != 'AA'
                        else 'BB'))),
            ('other URL', link(
                    r=uuid_, next='https://evil.example.net/', s=signature)),
            ("other record's", link(
                    r=uuid_, next=GOODBYE, s=bob_query['s'][0])),
            ('empty signature', link(r=uuid_, next=GOODBYE, s='')),
            ]
        for name, url in forged:
            with self.subTest(next=name):
                response = self.client.post(url)
                self.assertEqual(response.status_code, 200)
                self.assertNotIn('Location', response.headers)
                self.assertNotIn(
                    'evil.example.net', response.get_data(as_text=True))
                self.assertTrue(self.is_blocked(scenario, ann))

        # the confirmation page keeps the next URL that the server signed
        response = self.client.get(leave)
        self.assertEqual(response.status_code, 200)
        self.assertFalse(self.is_blocked(scenario, bob))
        form, = lxml.html.document_fromstring(
            response.get_data(as_text=True)).iter('form')
        response = self.client.post(urljoin(leave, form.get('action')))
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers['Location'], GOODBYE)

        # and Bob's own link is followed for Bob
        response = self.client.post(bob_mail.link("Leave for good"))
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers['Location'], GOODBYE)
        self.assertTrue(self.is_blocked(scenario, bob))

    def test_unsubscribe_without_confirmation(self):
        "With unsubscribe_confirm = False a GET unsubscribes at once"
        self.configure({('marketing', 'unsubscribe_confirm'): 'False'})
        scenario, (ann, bob), (mail, bob_mail) = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))

        response = self.client.get(mail.link("Unsubscribe"))
        self.assertEqual(response.status_code, 200)
        self.assertIn(
            message('msg_unsubscribe_done'),
            page_text(response))
        self.assertTrue(self.is_blocked(scenario, ann))

        response = self.client.get(bob_mail.link("Leave for good"))
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers['Location'], GOODBYE)
        self.assertTrue(self.is_blocked(scenario, bob))

    def test_unsubscribe_mangled_link(self):
        """A mangled unsubscribe link gets the module's page, in the language
        the browser asks for, with its 4xx status, and changes nothing"""
        scenario, (ann,), (mail,) = self.send_welcome(
            ("Ann", 'ann@example.com'))
        url = mail.link("Unsubscribe")
        query = parse_qs(urlsplit(url).query)
        path = urlsplit(url).path
        cut = f"{path}?r={query['r'][0][:20]}"
        unknown = f"{path}?r={uuid.uuid4().hex}"
        with inspecting():
            with Transaction().set_context(language='fr'):
                french = gettext(
                    'marketing_automation.msg_unsubscribe_invalid')
        english = message('msg_unsubscribe_invalid')
        self.assertNotEqual(french, english)

        before = self.snapshot()
        for link, status in [(cut, 400), (unknown, 404), (path, 400)]:
            for method in ['GET', 'POST']:
                with self.subTest(link=link, method=method):
                    response = self.client.open(
                        link, method=method,
                        headers={'Accept-Language': 'fr-BE,fr;q=0.9'})
                    self.assertEqual(response.status_code, status)
                    self.assertEqual(response.mimetype, 'text/html')
                    self.assertIn(french, page_text(response))
                    self.assertNotIn('form', response.get_data(as_text=True))
        response = self.client.get(cut)
        self.assertEqual(response.status_code, 400)
        self.assertIn(english, page_text(response))
        response = self.client.get(
            cut, headers={'Accept-Language': 'xx, *;q=0.1'})
        self.assertIn(english, page_text(response))
        self.assertEqual(self.client.head(cut).status_code, 400)
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(self.is_blocked(scenario, ann))

    def test_unsubscribe_confirmation_restored(self):
        "Without the option, a GET changes nothing"
        scenario, (ann,), (mail,) = self.send_welcome(
            ("Ann", 'ann@example.com'))
        before = self.snapshot()
        for url in [mail.link("Unsubscribe"), mail.link("Leave for good")]:
            response = self.client.get(url)
            self.assertEqual(response.status_code, 200)
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(self.is_blocked(scenario, ann))

    def test_unsubscribable_scenario(self):
        "Who unsubscribes from an unsubscribable scenario never enters again"
        scenario, (ann, bob), (mail, _) = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'),
            unsubscribable=True)

        response = self.client.post(
            mail['List-Unsubscribe'].strip('<>'), data=ONE_CLICK,
            content_type='application/x-www-form-urlencoded')
        self.assertEqual(response.status_code, 200)
        with inspecting():
            Party = Pool().get('party.party')
            self.assertEqual(
                [s.id for s in Party(ann).marketing_scenario_unsubscribed],
                [scenario])
            self.assertEqual(
                list(Party(bob).marketing_scenario_unsubscribed), [])
            self.assertTrue(self.record(scenario, ann).blocked)

        # a marketer removes both records from the scenario
        with committed():
            Record = Pool().get('marketing.automation.record')
            Record.delete([
                    self.record(scenario, ann), self.record(scenario, bob)])
        self.smtp.clear()
        self.run_crons()

        with inspecting():
            self.assertIsNone(self.record(scenario, ann))
            self.assertIsNotNone(self.record(scenario, bob))
        self.assertEqual(
            [m.rcpt_tos for m in self.smtp.received()],
            [['bob@example.com']])

    # Hostile requests

    def test_hostile_requests(self):
        "Whatever a stranger sends gets a 4xx and changes nothing"
        scenario, (ann,), (mail,) = self.send_welcome(
            ("Ann", 'ann@example.com'))
        with inspecting():
            ShortenedURL = Pool().get('web.shortened_url')
            uuid_ = self.record(scenario, ann).uuid
            entry = self.entry(scenario, ann, "Welcome")
            tracked = ShortenedURL.search([('record', '=', str(entry))])
        token = TRACKED.match(mail.link("See our offers"))['token']
        unknown_db = b64('no_such_database')
        unsubscribe = f'/m/{DB64}/unsubscribe'

        requests = [
            ('GET', unsubscribe + '?r='),
            ('GET', unsubscribe + '?r=abc'),
            ('GET', unsubscribe + '?r=' + 'a' * 5000),
            ('GET', unsubscribe + '?r=' + quote("' OR '1'='1' --")),
            ('GET', unsubscribe + '?r=' + quote(
                    "%s' OR blocked = false --" % uuid_)),
            ('GET', unsubscribe + '?r=' + 'z' * 32),
            ('GET', unsubscribe + '?r=' + uuid_ + '%00'),
            ('GET', unsubscribe + '?r=' + uuid_[:-1]),
            ('GET', unsubscribe),
            ('GET', unsubscribe + '?r=' + uuid.uuid4().hex),
            ('GET', f'/m/!!!!/unsubscribe?r={uuid_}'),
            ('GET', f'/m/%FF%FE/unsubscribe?r={uuid_}'),
            ('GET', f'/m/a/unsubscribe?r={uuid_}'),
            ('GET', f'/m/{unknown_db}/unsubscribe?r={uuid_}'),
            ('GET', f'/m/{b64(DB_NAME + "%")}/unsubscribe?r={uuid_}'),
            ('POST', unsubscribe + '?r='),
            ('POST', unsubscribe + '?r=' + quote("' OR 1=1 --")),
            ('POST', unsubscribe + '?r=' + 'z' * 32),
            ('POST', unsubscribe),
            ('POST', unsubscribe + '?r=' + uuid.uuid4().hex),
            ('POST', f'/m/!!!!/unsubscribe?r={uuid_}'),
            ('POST', f'/m/{unknown_db}/unsubscribe?r={uuid_}'),
            ('GET', f'/s/{DB64}/{secrets.token_urlsafe(16)}'),
            ('GET', f'/s/{DB64}/{token[:-1]}'),
            ('GET', f'/s/{DB64}/{token}A'),
            ('GET', f'/s/{DB64}/{token[:21]}.'),
            ('GET', f'/s/{DB64}/' + quote("' OR 1=1 --", safe='')),
            ('GET', f'/s/{DB64}/' + 'A' * 5000),
            ('GET', f'/s/{DB64}/..%2F..%2Fetc%2Fpasswd'),
            ('GET', f'/s/{unknown_db}/{token}'),
            ('GET', f'/s/!!!!/{token}'),
            ('POST', f'/s/{DB64}/{token}'),
            ] + [
            # our tracked links are not reachable by their sequential id
            ('GET', f'/s/{DB64}${ShortenedURL._shorten(u.id)}')
            for u in tracked]
        self.assertTrue(tracked)

        before = self.snapshot()
        for method, path in requests:
            with self.subTest(method=method, path=path[:80]):
                if method == 'POST':
                    response = self.client.post(
                        path, data=ONE_CLICK,
                        content_type='application/x-www-form-urlencoded')
                else:
                    response = self.client.get(path)
                self.assertClientError(response)
                self.assertNotIn('Location', response.headers)
        self.assertEqual(self.snapshot(), before)
        self.assertFalse(self.is_blocked(scenario, ann))

        # the web_shortener route still serves the links that are its own
        with committed():
            ShortenedURL = Pool().get('web.shortened_url')
            own, = ShortenedURL.create([{
                        'redirect_url': 'https://www.example.com/own'}])
            own_path = f'/s/{DB64}${ShortenedURL._shorten(own.id)}'
        response = self.client.get(own_path)
        self.assertEqual(response.status_code, 301)
        self.assertEqual(
            response.headers['Location'], 'https://www.example.com/own')

    # Language

    def test_french_recipient(self):
        "A French party reads the French email and the French page"
        with inspecting():
            Lang = Pool().get('ir.lang')
            french, = Lang.search([('code', '=', 'fr')])
            self.assertTrue(french.translatable)
        ann, amelie = create_parties(
            ("Ann", 'ann@example.com', 'en'),
            ("Amélie", 'amelie@example.com', 'fr'))
        scenario = self.start_scenario([ann, amelie], [welcome(
                    email_from="Shop News <news@example.com>")])
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            activity, = Activity.search([
                    ('parent', '=',
                        'marketing.automation.scenario,%s' % scenario)])
            with Transaction().set_context(language='fr'):
                Activity.write([activity], {
                        'email_from': "Équipe Boutique <news@example.com>",
                        'email_title': "Bienvenue ${record.name}",
                        'email_template': (
                            '<p>Bonjour ${record.name},</p>'
                            '<p><a href="unsubscribe">Se désabonner</a>'
                            '</p>'),
                        })

        self.run_crons()

        mail = self.mail_to('amelie@example.com')
        self.assertEqual(mail['Subject'], "Bienvenue Amélie")
        self.assertEqual(mail['Content-Language'], 'fr')
        sender, = mail['From'].addresses
        self.assertEqual(sender.display_name, "Équipe Boutique")
        self.assertIn("Bonjour Amélie,", mail.html)
        self.assertIn("Bonjour Amélie,", mail.text)
        self.assertNotIn("Hello", mail.html)

        english = self.mail_to('ann@example.com')
        self.assertEqual(english['Subject'], "Welcome Ann")
        self.assertEqual(english['Content-Language'], 'en')
        self.assertEqual(
            english['From'].addresses[0].display_name, "Shop News")
        self.assertIn("Hello Ann,", english.html)

        url = mail.link("Se désabonner")
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)
        text = page_text(response)
        self.assertIn("Voulez-vous ne plus recevoir ces e-mails", text)
        self.assertNotIn("Do you want to stop", text)
        form, = lxml.html.document_fromstring(
            response.get_data(as_text=True)).iter('form')
        self.assertIn("Me désabonner", form.text_content())
        response = self.client.post(urljoin(url, form.get('action')))
        self.assertEqual(response.status_code, 200)
        self.assertIn("Vous ne recevrez plus ces e-mails", page_text(response))
        self.assertTrue(self.is_blocked(scenario, amelie))

        # the English recipient gets the English page
        response = self.client.get(english.link("Unsubscribe"))
        self.assertIn(
            "Do you want to stop receiving these emails?",
            page_text(response))
