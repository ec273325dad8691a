# SPDX-License-Identifier: GPL-3.0-or-later
"""The routes of the module under requests nobody meant to send.

A recipient's mail client, a link scanner or a stranger reach the routes of
every database of the server: ``/m/empty.gif``, ``/m/empty.html``, the
tracked links ``/s/<database>/<token>``, the unsubscribe page
``/m/<database>/unsubscribe`` and web_shortener's ``/s/<database>$<id>``,
whose links of this module are kept out of reach.  Whatever they send, the
answer is never a 5xx, and a request without a valid token changes nothing.

The fuzz is bounded and repeatable: a fixed seed draws 3,000 requests
without a valid token (random methods, mutated and random database names,
tokens and uuids, query strings, headers and bodies) and 1,000 with the real
tokens of two emails.  The 4,000 requests took 4 to 5 s on SQLite and 10 to
14 s on PostgreSQL (up to 30 s while other test runs loaded the server): a
request to an unknown database makes trytond look at the server's list.
"""
import datetime as dt
import os
import random
import secrets
import sqlite3
import string
import tempfile
import uuid
from urllib.parse import parse_qs, quote, urlsplit

from sql import Table

from trytond import backend, config
from trytond.modules.marketing_automation import mailing, urls
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction

from .tools import (
    BASE, DB64, ONE_CLICK, TRACKED, EmailTestMixin, b64, committed,
    inspecting, message, override_config, page_text)

SEED = 8058
WITHOUT_TOKEN, WITH_TOKEN = 3000, 1000
# The methods of the routes come first: the others stop at the routing
METHODS = ['GET'] * 10 + ['HEAD'] * 4 + ['POST'] * 8 + [
    'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'PROPFIND',
    'MKCOL', 'get', 'BREW', 'X' * 100]
# Where a path, a name or a value goes wrong in the wild
GARBAGE = [
    '', ' ', '%', '%%', '%zz', '%00', '%0D%0A', '%FF%FE', '%C3%28',
    '%ED%A0%80', '%2F', '%2E%2E%2F', '..', '.', '~', '$', '$$', '=', '==',
    '%24', "'", '"', '<script>', "' OR '1'='1' --", '\\', '%5C',
    '%E2%80%A8', '%E2%80%8B', '%F0%9F%98%80', 'null', 'None', '-1', '0',
    '9' * 40, 'z' * 60, 'A' * 22, 'unsubscribe', 'empty.gif']
HUGE = [1000, 5000, 20000]
PRINTABLE = string.ascii_letters + string.digits + string.punctuation + ' '
UNUSABLE_REDIRECTS = [
    'https://example.org/a\r\nSet-Cookie: x=1',
    'https://example.org/a\x1b',
    'https://example.org/a b',
    'https://example.org/\u2028',
    'javascript:alert(1)',
    'data:text/html,<script>alert(1)</script>',
    'page.html',
    '//evil.example',
    'https://ex\u00e4..mple.org/',
    ]


class Fuzz:
    "The random parts of the requests, drawn from one seeded generator"

    def __init__(self, seed, databases, valid):
        self.random = random.Random(seed)
        self.databases = databases
        # nothing drawn for the requests without a token may be one of these
        self.valid = valid

    def choice(self, values):
        return self.random.choice(values)

    def chance(self, probability):
        return self.random.random() < probability

    def text(self, size=None):
        "Random characters, mostly printable ASCII, percent-encoded"
        if size is None:
            size = self.random.randrange(0, 40)
        characters = []
        for _ in range(size):
            if self.chance(0.8):
                characters.append(self.choice(PRINTABLE))
            else:
                characters.append(chr(self.random.choice([
                                self.random.randrange(0, 0x20),
                                self.random.randrange(0x7f, 0x100),
                                self.random.randrange(0x100, 0xd800),
                                self.random.randrange(0xe000, 0x110000),
                                ])))
        return quote(''.join(characters), safe='')

    def huge(self):
        return self.choice(string.ascii_letters) * self.choice(HUGE)

    def mutated(self, value):
        "value with one character replaced, inserted or removed"
        alphabet = string.ascii_letters + string.digits + '-_=.~%!$'
        position = self.random.randrange(len(value))
        operation = self.choice(['replace', 'insert', 'remove'])
        if operation == 'insert':
            return (value[:position] + self.choice(alphabet)
                + value[position:])
        if operation == 'remove':
            return value[:position] + value[position + 1:]
        character = self.choice(alphabet.replace(value[position], ''))
        return value[:position] + character + value[position + 1:]

    def junk(self, *examples):
        "A value that looks like one of examples, or like nothing"
        kind = self.random.randrange(5)
        if examples and kind == 0:
            return self.mutated(self.choice(examples))
        if kind == 1:
            return self.choice(GARBAGE)
        if kind == 2 and self.chance(0.2):
            return self.huge()
        return self.text()

    def database(self):
        if self.chance(0.5):
            return self.choice(self.databases)
        return self.junk(*self.databases)

    def path(self, token=None, uuid_=None, short_id=None):
        "A path to one of the routes, with the valid values given"
        database = self.database()
        route = self.random.randrange(10)
        if route == 0:
            return self.choice([
                    '/m/empty.gif', '/m/empty.gif/', '/m/EMPTY.GIF',
                    '/m/empty.gif%00', '/m//empty.gif', '/m/empty.gif.php',
                    '/m/empty.html', '/m/empty.html/', '/m/empty.html%00',
                    '/m/', '/s/', '/s/' + database, '/m/' + database])
        if route < 4:
            token = token or self.junk(*self.valid['tokens'])
            path = f'/s/{database}/{token}'
        elif route < 8:
            path = f'/m/{database}/unsubscribe'
        else:
            short_id = short_id or self.junk(*self.valid['short ids'])
            path = f'/s/{database}${short_id}'
        if self.chance(0.05):
            path += self.choice(['/', '/x', '/..', '%2F', '?', '#x'])
        return path + self.query(uuid_)

    def query(self, uuid_=None):
        "A query string with r, next and s and repeated, odd or huge keys"
        pairs = []
        if uuid_:
            pairs.append(('r', uuid_))
        for _ in range(self.random.randrange(4)):
            key = self.choice(['r', 'r', 'next', 's', 'R', '', self.text(5)])
            if key == 'r':
                value = self.choice([
                        self.junk(*self.valid['uuids']),
                        uuid.uuid4().hex,
                        self.mutated(self.choice(self.valid['uuids'])),
                        ])
            elif key == 'next':
                value = self.choice([
                        'https://www.example.com/goodbye',
                        'https://evil.example/', 'javascript:alert(1)',
                        quote('https://example.org/b\nX: 1', safe=''),
                        self.junk()])
            else:
                value = self.junk(*self.valid['signatures'])
            pairs.append((key, value))
        if not pairs:
            return ''
        return '?' + '&'.join(f'{k}={v}' for k, v in pairs)

    def headers(self, credentials=True):
        headers = []
        if credentials and self.chance(0.1):
            headers.append(self.choice([
                        ('Authorization', 'Basic YWRtaW46YWRtaW4='),
                        ('Authorization', 'Bearer ' + self.text()),
                        ('Authorization', 'Session ' + self.text()),
                        ('Authorization', self.header_junk()),
                        ('Cookie', 'tryton_session=admin:1:' + self.text()),
                        ]))
        if self.chance(0.5):
            headers.append(('User-Agent', self.choice([
                            'Mozilla/5.0', 'curl/8.0', 'Microsoft Office',
                            'Barracuda Sentinel', self.header_junk()])))
        if self.chance(0.3):
            headers.append(('Accept-Language', self.choice([
                            'fr', 'fr-BE,fr;q=0.9,en;q=0.1', '*', 'xx',
                            'de;q=abc', self.header_junk()])))
        if self.chance(0.2):
            headers.append((self.choice([
                            'Accept', 'Referer', 'Cookie', 'X-Forwarded-For',
                            'Range', 'If-None-Match', 'If-Modified-Since',
                            'Accept-Encoding', 'Content-Encoding',
                            'Transfer-Encoding', 'X-' + self.text(8)
                            or 'X-Empty']),
                    self.header_junk()))
        return headers

    def header_junk(self):
        if self.chance(0.1):
            return self.huge()
        return ''.join(
            chr(self.random.randrange(0x20, 0x100))
            for _ in range(self.random.randrange(40)))

    def body(self):
        "The Content-Type and the body of a request, if any"
        kind = self.random.randrange(8)
        if kind == 0:
            return None, None
        if kind == 1:
            return 'application/x-www-form-urlencoded', ONE_CLICK
        if kind == 2:
            return (
                self.choice([
                        'application/x-www-form-urlencoded',
                        'multipart/form-data; boundary=xyz',
                        'multipart/form-data', 'application/json',
                        'text/xml', 'text/plain', self.header_junk()]),
                bytes(self.random.randrange(256)
                    for _ in range(self.random.randrange(2000))))
        if kind == 3:
            return ('application/x-www-form-urlencoded',
                'List-Unsubscribe=' + self.huge())
        if kind == 4:
            return ('application/x-www-form-urlencoded', '&'.join(
                    f'k{i}={i}' for i in range(
                        self.choice([100, 1000, 10000]))))
        if kind == 5:
            return ('application/x-www-form-urlencoded',
                'x' * self.choice([100_000, 3_000_000]))
        if kind == 6:
            return ('application/json',
                self.choice(['{"method": "x"}', '{', 'null', '[]']))
        return ('multipart/form-data; boundary=b', (
                '--b\r\nContent-Disposition: form-data; '
                'name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--b--\r\n'))


class RoutesFuzzTestCase(EmailTestMixin, TestCase):
    """The routes of the module answer every request without a 5xx; the
    recipients get their emails as in the email tests"""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending()

    def request(self, method, path, headers=(), content_type=None, body=None):
        headers = list(headers)
        if content_type is not None:
            headers.append(('Content-Type', content_type))
        return self.client.open(
            path, method=method, headers=headers, data=body)

    def assertNoServerError(self, fuzz, count, **valid):
        """Send count requests drawn by fuzz, with one of the values of valid
        for each of the arguments of Fuzz.path most of the time"""
        failures = []
        for _ in range(count):
            method = fuzz.choice(METHODS)
            path = fuzz.path(**{
                    k: fuzz.choice(v) if v and fuzz.chance(0.8) else None
                    for k, v in valid.items()})
            content_type, body = fuzz.body()
            # trytond itself logs in with the credentials of a request to
            # web_shortener's route, and answers 503 for an unknown database
            headers = fuzz.headers(credentials='$' not in path)
            try:
                response = self.request(
                    method, path, headers, content_type, body)
            except Exception as exception:
                # a real server answers 500 to what escapes the application
                failures.append((
                        method, path[:120], headers, content_type,
                        str(body)[:100], repr(exception)))
                continue
            data = response.get_data()
            if response.status_code >= 500 or b'Traceback' in data:
                failures.append(
                    (method, path[:120], response.status_code, data[:300]))
        self.assertEqual(failures[:10], [], msg=f"{len(failures)} failures")

    def tokens(self, mail):
        return [TRACKED.match(url)['token']
            for url in [mail.link("See our offers"), mail.pixel]]

    def test_fuzz(self):
        "Thousands of random requests: no 5xx, no change without a token"
        scenario, parties, mails = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        tokens = [t for mail in mails for t in self.tokens(mail)]
        leave = [parse_qs(urlsplit(m.link("Leave for good")).query)
            for m in mails]
        uuids = [q['r'][0] for q in leave]
        signatures = [q['s'][0] for q in leave]
        with inspecting():
            ShortenedURL = Pool().get('web.shortened_url')
            # the links of the emails by their sequential ids lead nowhere
            hidden_ids = [
                ShortenedURL._shorten(u.id)
                for u in ShortenedURL.search([('token', '!=', None)])]
        databases = [
            DB64, b64('no_such_database'), b64(DB_NAME + 'x'),
            b64('postgres'), b64('template1'), b64('../' + DB_NAME),
            b64(':memory:'), b64('é' * 10)]
        # what is mutated: never valid once mutated, a hidden id at most
        fuzz = Fuzz(SEED, databases, {
                'tokens': tokens,
                'uuids': uuids,
                'signatures': signatures,
                'short ids': hidden_ids,
                })

        before = self.snapshot()
        self.assertNoServerError(fuzz, WITHOUT_TOKEN)
        self.assertEqual(self.snapshot(), before)
        for party in parties:
            self.assertFalse(self.is_blocked(scenario, party))

        # created only now, so that no mutated id may reach it before
        with committed():
            ShortenedURL = Pool().get('web.shortened_url')
            own, = ShortenedURL.create([{
                        'redirect_url': 'https://www.example.com/own'}])
            own_id = ShortenedURL._shorten(own.id)
        self.assertNoServerError(
            fuzz, WITH_TOKEN, token=tokens, uuid_=uuids, short_id=[own_id])
        self.assertNotEqual(self.snapshot(), before)

    def test_unusable_redirect(self):
        "A tracked link stored with an unusable URL is refused untouched"
        scenario, (ann,), (mail,) = self.send_welcome(
            ("Ann", 'ann@example.com'))
        tokens = {}
        with committed():
            ShortenedURL = Pool().get('web.shortened_url')
            url = ShortenedURL.__table__()
            entry = self.entry(scenario, ann, "Welcome")
            cursor = Transaction().connection.cursor()
            for redirect in UNUSABLE_REDIRECTS:
                token = tokens[redirect] = secrets.token_urlsafe(16)
                cursor.execute(*url.insert(
                        [url.create_uid, url.create_date, url.redirect_url,
                            url.record, url.method, url.token],
                        [[0, dt.datetime.now(), redirect, str(entry),
                            'marketing.automation.record.activity'
                            '|on_email_clicked', token]]))

        before = self.snapshot()
        for redirect, token in tokens.items():
            for method in ['GET', 'HEAD']:
                with self.subTest(redirect=redirect, method=method):
                    response = self.request(method, f'/s/{DB64}/{token}')
                    self.assertEqual(response.status_code, 404)
                    self.assertNotIn('Location', response.headers)
        self.assertEqual(self.snapshot(), before)
        with inspecting():
            self.assertFalse(
                self.entry(scenario, ann, "Welcome").email_clicked)

    def test_unusable_next(self):
        "A signed but unusable next still unsubscribes, without redirecting"
        scenario, parties, _ = self.send_welcome(
            ("Ann", 'ann@example.com'), ("Bob", 'bob@example.com'))
        with inspecting():
            pool = Pool()
            Secret = pool.get('marketing.automation.email.secret')
            secret = Secret.get()
            ann_url, bob_url = [
                unsubscribe_path(
                    self.record(scenario, party).uuid, next_, secret)
                for party, next_ in zip(parties, [
                        'https://example.org/b\nX: 1',
                        'https://example.org/\r\nSet-Cookie: x=1'])]

        # the confirmation page drops the next it cannot follow
        response = self.request('GET', ann_url)
        self.assertEqual(response.status_code, 200)
        self.assertNotIn('example.org', response.get_data(as_text=True))
        self.assertFalse(self.is_blocked(scenario, parties[0]))

        response = self.request('POST', ann_url)
        self.assertEqual(response.status_code, 200)
        self.assertNotIn('Location', response.headers)
        self.assertIn(message('msg_unsubscribe_done'), page_text(response))
        self.assertTrue(self.is_blocked(scenario, parties[0]))

        # and so does a GET that acts at once
        self.configure({('marketing', 'unsubscribe_confirm'): 'False'})
        response = self.request('GET', bob_url)
        self.assertEqual(response.status_code, 200)
        self.assertNotIn('Location', response.headers)
        self.assertIn(message('msg_unsubscribe_done'), page_text(response))
        self.assertTrue(self.is_blocked(scenario, parties[1]))

    def test_database_without_the_module(self):
        "A database of the server without the module answers a bare 404"
        with tempfile.TemporaryDirectory() as path, override_config({
                    # where the SQLite backend keeps its databases in files
                    ('database', 'path'): path,
                    }):
            name = copy_without_module()
            try:
                self.assertBare404(name)
            finally:
                drop_db(name)

    def assertBare404(self, name):
        database = b64(name)
        unsubscribe = f'/m/{database}/unsubscribe?r={uuid.uuid4().hex}'
        for method, path, body in [
                ('GET', f'/s/{database}/{mailing.new_token()}', None),
                ('HEAD', f'/s/{database}/{mailing.new_token()}', None),
                ('GET', unsubscribe, None),
                ('HEAD', unsubscribe, None),
                ('POST', unsubscribe, ONE_CLICK),
                ]:
            with self.subTest(method=method, path=path):
                response = self.request(
                    method, path,
                    content_type='application/x-www-form-urlencoded',
                    body=body)
                self.assertEqual(response.status_code, 404)
                text = response.get_data(as_text=True)
                for leak in [
                        'Error', 'Traceback', 'marketing.',
                        'web.shortened_url']:
                    self.assertNotIn(leak, text)
        # the database was found and opened: what it lacks is the module
        self.assertIn(name, Pool.database_list())


def unsubscribe_path(uuid_, next_, secret):
    "The path of the unsubscribe link of uuid_ with next_ signed by secret"
    url = urls.unsubscribe_url(
        BASE, urls.encode_database(DB_NAME), uuid_, next_, secret)
    return url[len(BASE):]


def copy_without_module():
    """Copy the test database into another one of the server where the
    module is not activated and return its name

    The copy takes a moment where creating a database takes seconds, and
    keeps the modules the module depends on."""
    if backend.name == 'sqlite':
        name = 'without_marketing_automation'
        source = backend.Database(DB_NAME).connect()
        connection = source.get_connection()
        try:
            target = sqlite3.connect(os.path.join(
                    config.get('database', 'path'), name + '.sqlite'))
            connection.backup(target)
            target.close()
        finally:
            source.put_connection(connection)
    else:
        name = DB_NAME + '_without'
        # the template of a database may have no other session
        backend.Database(DB_NAME).close()
        with Transaction().start(
                None, 0, close=True, autocommit=True) as transaction:
            transaction.database.create(transaction.connection, name, DB_NAME)
    with Transaction().start(name, 0, close=True) as transaction:
        module = Table('ir_module')
        transaction.connection.cursor().execute(*module.update(
                [module.state], ['not activated'],
                where=module.name == 'marketing_automation'))
        transaction.commit()
    # as a server that has not seen the database yet
    backend.Database.clear_cache()
    return name
