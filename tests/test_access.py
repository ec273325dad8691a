# SPDX-License-Identifier: GPL-3.0-or-later
"""Who may read the tracking tokens: the marketers and the administrators.

A real email is sent first, so real tracked links exist; then three users
log in over JSON-RPC as the Tryton client does: a user of no group, a user
of the Marketing group and an administrator.  The user of no group must find
no tracked link, no record UUID and no Message-ID that would let them fire
a recipient's open or click or unsubscribe them, while the shortened URLs of
other modules keep working for them.
"""
import warnings
from urllib.parse import unquote, urlsplit

from werkzeug.test import Client

from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction
from trytond.wsgi import app

from .tools import (
    BASE, OFFER, SENDER, TRACKED, Mail, RPCError, SMTPServer, Session,
    committed, encode, override_config, welcome)

URL = 'web.shortened_url'
PLAIN = 'https://www.example.org/not-tracked'


class AccessTestCase(TestCase):
    "The tracking tokens are for the Marketing group and the administrators"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')
        smtp = SMTPServer().start()
        cls.addClassCleanup(smtp.stop)
        configuration = override_config({
                ('email', 'uri'): smtp.uri(timeout=5),
                ('marketing', 'automation_base'): BASE,
                ('marketing', 'email_from'): SENDER,
                })
        configuration.__enter__()
        cls.addClassCleanup(configuration.__exit__, None, None, None)

        cls.send_welcome()
        cls.mail = Mail(smtp.wait_for(1)[0])
        cls.create_users()
        cls.plain_url_id, cls.other_email_id = cls.create_others()
        cls.legacy_id = cls.create_legacy_link()
        with Transaction().start(DB_NAME, 0, readonly=True):
            ShortenedURL = Pool().get(URL)
            cls.tracked_ids = [
                u.id for u in ShortenedURL.search([('token', '!=', None)])]
        assert len(cls.tracked_ids) == 3, (
            "an offer link, a pixel and the trap of the scanners")

    @classmethod
    def send_welcome(cls):
        "Send the welcome email to Ann and stop the scenario"
        with committed():
            pool = Pool()
            Party = pool.get('party.party')
            Scenario = pool.get('marketing.automation.scenario')
            cls.ann, = Party.create([{
                        'name': "Ann Archer",
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': 'ann@example.com',
                                        }])],
                        }])
            cls.scenario, = Scenario.create([{
                        'name': "Spring",
                        'model': 'party.party',
                        'domain': encode([('id', '=', cls.ann.id)]),
                        'activities': [('create', [welcome()])],
                        }])
            Scenario.run([cls.scenario])
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
        with committed():
            Pool().get('marketing.automation.record.activity').process()
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.stop([Scenario(cls.scenario.id)])

    @classmethod
    def create_users(cls):
        "A user of no group, a marketer and an administrator with passwords"
        cls.passwords = {
            'plain': 'Qv7#mZ2@pL9$wK4!',
            'marketer': 'Hx3&nB8*tR5^yJ1%',
            'administrator': 'Fd6!sW9#cE2@uM7$',
            }
        with committed(user=0):
            pool = Pool()
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            groups = {
                'plain': [],
                'marketer': [
                    ModelData.get_id('marketing', 'group_marketing')],
                'administrator': [ModelData.get_id('res', 'group_admin')],
                }
            User.create([{
                        'name': login.title(),
                        'login': login,
                        'password': password,
                        'groups': [('add', groups[login])],
                        } for login, password in cls.passwords.items()])

    @classmethod
    def create_others(cls):
        """A shortened URL and an email of other modules, without token nor
        marketing record"""
        with committed(user=0):
            pool = Pool()
            ShortenedURL = pool.get(URL)
            IrEmail = pool.get('ir.email')
            url, = ShortenedURL.create([{'redirect_url': PLAIN}])
            email, = IrEmail.create([{
                        'recipients': 'ann@example.com',
                        'subject': "Your invoice",
                        'message_id': '<invoice-1@example.com>',
                        'resource': str(cls.ann),
                        }])
            return url.id, email.id

    @classmethod
    def create_legacy_link(cls):
        "A tracked link without token, as Tryton's own module makes them"
        with committed(user=0):
            pool = Pool()
            ShortenedURL = pool.get(URL)
            RecordActivity = pool.get('marketing.automation.record.activity')
            entry, = RecordActivity.search([])
            url, = ShortenedURL.create([{
                        'redirect_url': OFFER,
                        'record': str(entry),
                        'method': (
                            'marketing.automation.record.activity'
                            '|on_email_clicked'),
                        }])
            return url.id

    def login(self, login):
        return Session(login, self.passwords[login])

    def assertRefused(self, call, *args):
        "Assert that the call answers an error and return its message"
        with self.assertRaises(RPCError) as raised:
            call(*args)
        kind, (message, *_) = raised.exception.args
        self.assertEqual(kind, 'UserError')
        return message

    @property
    def tokens(self):
        "The tokens of the links of the email, the pixel's and the trap's"
        urls = [href for href, _ in self.mail.links] + [self.mail.pixel]
        return sorted(
            m.group('token') for m in map(TRACKED.match, urls) if m)

    @property
    def uuid(self):
        query = urlsplit(self.mail.link("Unsubscribe")).query
        return query.split('r=', 1)[1]

    # The user of no group

    def test_plain_user_finds_no_tracked_link(self):
        "Searching finds the other modules' shortened URLs only"
        plain = self.login('plain')
        self.assertEqual(len(self.tokens), 3)

        found = plain.model(URL, 'search_read', [], 0, None, None, [
                'redirect_url', 'shortened_url', 'method'])
        self.assertEqual([r['id'] for r in found], [self.plain_url_id])
        row, = found
        self.assertEqual((row['redirect_url'], row['method']), (PLAIN, None))
        # web_shortener's sequential URL, not a tracked one
        self.assertNotRegex(row['shortened_url'], TRACKED)
        self.assertIn('$', unquote(row['shortened_url']))
        self.assertEqual(plain.model(URL, 'search_count', []), 1)

        for domain in [
                [('redirect_url', '=', OFFER)],
                [('redirect_url', 'like', '%/m/empty.gif')],
                [('record', 'like', 'marketing.automation.%')],
                [('method', '!=', None)],
                [('id', 'in', self.tracked_ids)],
                [('rec_name', 'ilike', '%')],
                ]:
            with self.subTest(domain=domain):
                found = plain.model(URL, 'search', domain)
                self.assertEqual(
                    set(found) & {self.legacy_id, *self.tracked_ids},
                    set())
                self.assertEqual(
                    plain.model(URL, 'search_count', domain), len(found))
                self.assertEqual(plain.model(
                        URL, 'export_data_domain', domain,
                        ['redirect_url', 'shortened_url']),
                    [[PLAIN, row['shortened_url']]] * len(found))

    def test_plain_user_cannot_use_the_token(self):
        "The token is refused in the fields, the domain and the order"
        plain = self.login('plain')
        for domain in [
                [('token', '!=', None)],
                [('token', 'in', self.tokens)],
                [('token', 'like', self.tokens[0][:3] + '%')],
                ]:
            with self.subTest(domain=domain):
                self.assertRefused(plain.model, URL, 'search', domain)
                self.assertRefused(
                    plain.model, URL, 'search_count', domain)
        self.assertRefused(
            plain.model, URL, 'search', [], 0, None, [('token', 'DESC')])
        self.assertRefused(
            plain.model, URL, 'search_read', [], 0, None, None, ['token'])
        self.assertRefused(
            plain.model, URL, 'export_data_domain', [], ['token'])

    def test_plain_user_reads_no_tracked_link(self):
        "Reading a tracked link by its id is refused, whatever the field"
        plain = self.login('plain')
        for field in [
                'redirect_url', 'shortened_url', 'token', 'rec_name',
                'record', 'method', 'count']:
            with self.subTest(field=field):
                message = self.assertRefused(
                    plain.model, URL, 'read', self.tracked_ids, [field])
                self.assertNotIn(self.tokens[0], message)
        self.assertRefused(
            plain.model, URL, 'export_data', self.tracked_ids,
            ['redirect_url', 'shortened_url'])
        # one visible id among them does not open the others
        self.assertRefused(
            plain.model, URL, 'read',
            [self.plain_url_id] + self.tracked_ids, ['shortened_url'])
        self.assertRefused(
            plain.model, URL, 'read', [self.legacy_id], ['shortened_url'])

    def test_plain_user_keeps_other_links(self):
        "The shortened URLs of other modules still work for everyone"
        plain = self.login('plain')
        row, = plain.model(URL, 'read', [self.plain_url_id], [
                'redirect_url', 'shortened_url', 'rec_name', 'count'])
        self.assertEqual(row['redirect_url'], PLAIN)
        self.assertEqual(plain.model(
                URL, 'export_data', [self.plain_url_id],
                ['redirect_url', 'shortened_url']),
            [[PLAIN, row['shortened_url']]])

        # web_shortener's route still answers, as to anyone
        response = Client(app).get(urlsplit(row['shortened_url']).path)
        self.assertEqual(response.status_code, 301)
        self.assertEqual(response.headers['Location'], PLAIN)

    def test_plain_user_reaches_no_record_nor_message(self):
        "Records, their emails and their entries are the marketers'"
        plain = self.login('plain')
        for model, fields in [
                ('marketing.automation.record', ['uuid']),
                ('marketing.automation.email', ['message']),
                ('marketing.automation.record.activity', ['email_opened']),
                ]:
            with self.subTest(model=model):
                self.assertRefused(
                    plain.model, model, 'search_read', [], 0, None, None,
                    fields)
                self.assertRefused(plain.model, model, 'search_count', [])

        with Transaction().start(DB_NAME, 0, readonly=True):
            RecordActivity = Pool().get('marketing.automation.record.activity')
            entry, = RecordActivity.search([])
        self.assertRefused(
            plain.model, 'marketing.automation.record.activity',
            'on_email_clicked', [entry.id])
        with Transaction().start(DB_NAME, 0, readonly=True):
            entry = Pool().get('marketing.automation.record.activity')(
                entry.id)
            self.assertEqual((entry.email_opened, entry.email_clicked),
                (False, False))

    def test_plain_user_finds_no_logged_marketing_email(self):
        """The module's emails are hidden from the email log: their
        Message-ID holds the record's UUID"""
        plain = self.login('plain')
        with Transaction().start(DB_NAME, 0, readonly=True):
            IrEmail = Pool().get('ir.email')
            logged, = IrEmail.search([
                    ('marketing_automation_record', '!=', None)])
            self.assertIn(self.uuid, logged.message_id)
            logged_id = logged.id

        found = plain.model('ir.email', 'search_read', [
                ('resource', '=', str(self.ann)),
                ], 0, None, None, ['message_id', 'subject'])
        self.assertEqual([r['id'] for r in found], [self.other_email_id])
        for domain in [
                [('marketing_automation_record', '!=', None)],
                [('message_id', 'like', f'%{self.uuid}%')],
                ]:
            with self.subTest(domain=domain):
                self.assertEqual(
                    plain.model('ir.email', 'search', domain), [])
        self.assertRefused(
            plain.model, 'ir.email', 'read', [logged_id], ['message_id'])
        self.assertRefused(
            plain.model, 'ir.email', 'search',
            [('marketing_automation_record.uuid', '=', self.uuid)])
        # the name of a record searches its UUID, and trytond searches a
        # relation by a text without applying the rights of its model
        with warnings.catch_warnings():
            # it also warns that the text should name its field
            warnings.simplefilter('ignore', UserWarning)
            self.assertEqual(plain.model('ir.email', 'search', [
                        ('marketing_automation_record', 'ilike',
                            self.uuid[:4] + '%'),
                        ]), [])

    def test_visits_lead_to_no_tracked_link(self):
        """The visits of a tracked link do not lead to it

        They are not offered over RPC, but other code (or the REST API)
        reads them with the user's rights."""
        with committed(user=0):
            URLAccess = Pool().get('web.shortened_url.access')
            visit, = URLAccess.create([{'url': self.tracked_ids[0]}])
        with Transaction().start(DB_NAME, 0, readonly=True):
            pool = Pool()
            User = pool.get('res.user')
            URLAccess = pool.get('web.shortened_url.access')
            plain, = User.search([('login', '=', 'plain')])
            with Transaction().set_user(plain.id), \
                    Transaction().set_context(_check_access=True):
                for field in [
                        'url.token', 'url.shortened_url', 'url.redirect_url']:
                    with self.subTest(field=field), \
                            self.assertRaises(AccessError):
                        URLAccess.read([visit.id], [field])
                # the rules of the URLs do not reach a search through
                # the relation: the field access on the token does
                for domain in [
                        [('url.token', '!=', None)],
                        [('url.token', 'like', self.tokens[0][:3] + '%')],
                        ]:
                    with self.subTest(domain=domain), \
                            self.assertRaises(AccessError):
                        URLAccess.search(domain)
                with self.assertRaises(AccessError):
                    URLAccess.search([], order=[('url.token', 'ASC')])

    # Those who may

    def test_marketer_and_administrator_read_the_tokens(self):
        "The Marketing group and the administrators read the tracked links"
        urls = sorted(
            url for url in [href for href, _ in self.mail.links]
            + [self.mail.pixel] if TRACKED.match(url))
        self.assertIn(self.mail.link("See our offers"), urls)
        self.assertIn(self.mail.pixel, urls)
        for login in ['marketer', 'administrator']:
            with self.subTest(user=login):
                user = self.login(login)
                found = user.model(URL, 'search_read', [
                        ('token', '!=', None),
                        ], 0, None, None, ['token', 'shortened_url'])
                self.assertEqual(
                    sorted(r['token'] for r in found), self.tokens)
                self.assertEqual(
                    sorted(r['shortened_url'] for r in found), urls)
                self.assertEqual(user.model(URL, 'search_count', []), 5)
                rows = user.model(
                    URL, 'read', self.tracked_ids + [self.legacy_id],
                    ['redirect_url'])
                self.assertIn(OFFER, [r['redirect_url'] for r in rows])
                logged = user.model('ir.email', 'search_read', [
                        ('marketing_automation_record', '!=', None),
                        ], 0, None, None, ['message_id'])
                self.assertEqual(len(logged), 1)
                self.assertEqual(
                    logged[0]['message_id'], self.mail['Message-ID'])
