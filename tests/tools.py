# SPDX-License-Identifier: GPL-3.0-or-later
"""What the tests need to play the mail server, the mail client and the
cron of a real site.

``SMTPServer`` is a real SMTP server on the loopback (aiosmtpd in a thread)
that keeps every message it accepts, and that a test can make refuse
connections, refuse recipients (at RCPT or at the end of DATA) or stall.
``committed`` runs a piece of work in a transaction that is committed, then
runs the tasks it queued as trytond does without a queue worker.
``parse_message`` and ``html_links`` read a message as a mail client does.
``clicked_entry`` and ``confirm_sale`` make the clicks and the sales that
the revenue counts.  ``create_parties`` makes the recipients of every test
and ``encode`` writes the PYSON of a domain.

The test files share their helpers only through this file, never by
importing another test file: ``Mail`` reads a received email as its
recipient does, ``welcome`` is the email most tests send and
``EmailTestMixin`` follows it to its recipients; ``create_entries``,
``sent`` and ``reporting`` write and read the numbers of the reporting;
``Session`` is a user of the Tryton client over JSON-RPC.
"""
import asyncio
import base64
import datetime as dt
import email
import email.policy
import logging
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import namedtuple
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import lxml.html
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from werkzeug.test import Client

from trytond import backend, config
from trytond.i18n import gettext
from trytond.pool import Pool
from trytond.pyson import PYSONEncoder
from trytond.tests.test_tryton import DB_NAME, USER
from trytond.transaction import Transaction
from trytond.worker import run_task
from trytond.wsgi import app

__all__ = [
    'Received', 'SMTPServer', 'override_config', 'committed', 'run_queue',
    'shared_database', 'parse_message', 'html_links', 'SendingTestMixin',
    'BROWSER', 'event_clock', 'human_request', 'decide_events',
    'without_mjml_compilers', 'clicked_entry', 'confirm_sale',
    'without_company', 'encode', 'email_of', 'create_parties',
    'OFFER', 'GOODBYE', 'ONE_CLICK', 'b64', 'DB64', 'TRACKED', 'welcome',
    'THANKS', 'REMINDER', 'Mail', 'party_reference', 'inspecting',
    'message', 'page_text', 'EmailTestMixin', 'EMAIL', 'THIS_MONTH', 'at',
    'create_running_scenario', 'create_records', 'create_entries', 'sent',
    'reporting', 'RPCError', 'Session']

Received = namedtuple('Received', ['mail_from', 'rcpt_tos', 'data'])
# the loopback server of the tests asks for a login without TLS on purpose
warnings.filterwarnings(
    'ignore', 'Requiring AUTH while not requiring TLS', UserWarning)


@contextmanager
def without_mjml_compilers():
    """Render in boxes whose interpreter finds no MJML compiler, as on a
    server where none is installed"""
    from trytond.modules.marketing_automation import mailing, render_box
    directory = tempfile.mkdtemp(prefix='marketing-no-mjml-')
    for name in ['mrml', 'mjml']:
        with open(os.path.join(directory, name + '.py'), 'w') as file:
            file.write('raise ImportError("not installed")\n')
    sys.path.insert(0, directory)
    # the boxes started before know the compilers
    render_box.close_boxes()
    try:
        with mock.patch.multiple(mailing, mrml=None, mjml2html=None):
            yield
    finally:
        sys.path.remove(directory)
        render_box.close_boxes()
        shutil.rmtree(directory, ignore_errors=True)


def _refusal(code):
    if 400 <= code < 500:
        return f'{code} 4.2.1 Mailbox busy, try again later'
    return f'{code} 5.1.1 No such user here'


class _Handler:

    def __init__(self, server):
        self.server = server

    async def handle_MAIL(
            self, server, session, envelope, address, mail_options):
        code = self.server.refused_senders.get(address.lower())
        if code:
            return f'{code} 5.7.1 Sender not allowed'
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return '250 OK'

    async def handle_RCPT(
            self, server, session, envelope, address, rcpt_options):
        code = self.server.refused.get(address.lower())
        if code:
            return _refusal(code)
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            code = self.server.refused_data.get(address.lower())
            if code:
                return _refusal(code)
        received = Received(
            envelope.mail_from, list(envelope.rcpt_tos),
            envelope.original_content)
        with self.server.lock:
            self.server.messages.append(received)
        if self.server.on_message:
            self.server.on_message(received)
        # The message is taken but the client may give up waiting for the
        # answer, as when a connection drops at the worst moment.
        if self.server.stall:
            await asyncio.sleep(self.server.stall)
        return '250 2.0.0 Message accepted for delivery'


class _Controller(Controller):

    def _trigger_server(self):
        # Listening on port 0 lets the system choose a free port.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPServer:
    """A real SMTP server on 127.0.0.1 for the tests.

    ``messages`` holds what it accepted, as Received(mail_from, rcpt_tos,
    data) with the raw bytes of each message.  While it is stopped the port
    refuses connections; ``refused`` maps a recipient address to the SMTP
    code to answer to its RCPT command (4xx or 5xx) and ``refused_data`` to
    the code to answer to the end of the DATA of its messages, which it does
    not keep; ``refused_senders`` maps a sender address to the code to
    answer to its MAIL command; with ``credentials`` (login, password) the
    server asks the client to log in with them; ``stall`` is how many
    seconds it waits, once it has taken a message, before answering the end
    of its DATA, and ``on_message`` a function called with each message it
    takes, before it answers."""

    def __init__(self, credentials=None):
        self.messages = []
        self.refused = {}
        self.refused_data = {}
        self.refused_senders = {}
        self.credentials = credentials
        self.stall = 0
        self.on_message = None
        self.lock = threading.Lock()
        self.port = 0
        self._controller = None

    def start(self):
        "Start listening (again on the same port once it has a port)"
        options = {}
        if self.credentials:
            options.update(
                authenticator=self._authenticate, auth_required=True,
                auth_require_tls=False)
        self._controller = _Controller(
            _Handler(self), hostname='127.0.0.1', port=self.port, **options)
        self._controller.start()
        self.port = self._controller.port
        return self

    def _authenticate(self, server, session, envelope, mechanism, data):
        login, password = self.credentials
        success = (isinstance(data, LoginPassword)
            and data.login == login.encode()
            and data.password == password.encode())
        # a refusal that is not "handled" is answered with a 535
        return AuthResult(success=success, handled=False)

    def stop(self):
        "Stop listening: connections are refused until start"
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self):
        return self._controller is not None

    def uri(self, timeout=None):
        "The URI of [email] uri that reaches this server"
        uri = f'smtp://127.0.0.1:{self.port}'
        if timeout is not None:
            uri += f'?timeout={timeout}'
        return uri

    def refuse(self, address, code, at='RCPT'):
        """Answer code to the RCPT command of the recipient address, or to the
        end of the DATA of its messages when at is 'DATA' (None to accept it
        again)"""
        refused = {'RCPT': self.refused, 'DATA': self.refused_data}[at]
        if code is None:
            refused.pop(address.lower(), None)
        else:
            refused[address.lower()] = code

    def clear(self):
        with self.lock:
            del self.messages[:]

    def received(self):
        "A copy of the messages received so far"
        with self.lock:
            return list(self.messages)

    def to(self, address):
        "The messages received whose envelope has the recipient address"
        return [m for m in self.received() if address in m.rcpt_tos]

    def wait_for(self, count, timeout=10):
        "Wait until count messages are received; return them"
        deadline = time.monotonic() + timeout
        while len(self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received()


def _clear_config_cache():
    for function in [
            config.get, config.getint, config.getfloat, config.getboolean]:
        function.cache_clear()


@contextmanager
def override_config(values):
    """Set the configuration options of values, a dictionary
    {(section, option): value}, and restore them at exit"""
    saved = {}
    for (section, option), value in values.items():
        if not config.has_section(section):
            config.add_section(section)
            saved.setdefault(section, None)
        elif section not in saved:
            saved[section] = {
                o: config.get(section, o) for o in config.options(section)}
        config.set(section, option, value)
    try:
        yield
    finally:
        for section, options in saved.items():
            config.remove_section(section)
            if options is not None:
                config.add_section(section)
                for option, value in options.items():
                    config.set(section, option, value)
        _clear_config_cache()


class _Failures(logging.Handler):
    "Keep the errors that the worker logs instead of raising them"

    def __init__(self):
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter('%(message)s'))
        self.messages = []

    def emit(self, record):
        self.messages.append(self.format(record))


def run_queue():
    """Run the tasks that the ended transactions queued, as trytond does
    without a queue worker; return how many ran.

    A task that fails makes it raise AssertionError."""
    tasks = Transaction().tasks
    logger = logging.getLogger('trytond.worker')
    failures = _Failures()
    logger.addHandler(failures)
    count = 0
    try:
        while tasks:
            run_task(DB_NAME, tasks.pop())
            count += 1
    finally:
        logger.removeHandler(failures)
    if failures.messages:
        raise AssertionError(
            "queued tasks failed:\n" + '\n'.join(failures.messages))
    return count


@contextmanager
def committed(user=USER, context=None):
    """A transaction that is committed at the end of the block, after which
    the tasks it queued are run"""
    with Transaction().start(
            DB_NAME, user, context=context) as transaction:
        yield transaction
        transaction.commit()
    run_queue()


@contextmanager
def shared_database():
    """The name of a database that other connections open while the block
    runs, each with its transactions: the test database on PostgreSQL; on
    SQLite, whose test database lives in the memory of the test process,
    a copy of it in a file made for the block and removed after it, which
    trytond opens by that name meanwhile"""
    if backend.name != 'sqlite':
        yield DB_NAME
        return
    with tempfile.TemporaryDirectory() as directory:
        name = 'shared_%s' % os.getpid()
        with Transaction().start(DB_NAME, 0, readonly=True) as transaction:
            with sqlite3.connect(
                    os.path.join(directory, name + '.sqlite')) as copy:
                transaction.connection.backup(copy)
            copy.close()
        with override_config({('database', 'path'): directory}):
            # the routes would look for it among the databases they listed
            # before it was made
            with Transaction().start(name, 0, readonly=True):
                Pool(name).init()
            try:
                yield name
            finally:
                Pool.stop(name)


def parse_message(data):
    "Parse the raw bytes of a message as a mail client does"
    return email.message_from_bytes(data, policy=email.policy.default)


def html_links(html):
    """The targets of the links and the sources of the images of html, as
    ([(href, text)], [src])"""
    document = lxml.html.document_fromstring(html)
    links = [
        (a.get('href'), a.text_content().strip())
        for a in document.iter('a') if a.get('href') is not None]
    images = [img.get('src') for img in document.iter('img')]
    return links, images


def encode(value):
    "The PYSON text of value, as the client writes a domain or a condition"
    return PYSONEncoder().encode(value)


def email_of(name):
    "The email address of a party named name: its first word at example.com"
    return '%s@example.com' % name.split()[0].lower()


def create_parties(
        *parties, email=email_of, code=None, suffix=None,
        postal_address=False, bulk=False, commit=True, **values):
    """Create parties and return their ids, or with commit=False the
    parties, created in the transaction of the caller

    Each of parties is a name, or a tuple (name, email address) or (name,
    email address, language code) where an address None gives no email
    address.  The options, for every party:

    - email: the function that gives the email address of a party from
      its name, when the party is a name; None for no email address
    - code: the function that gives the code of a party from its name
    - suffix: a text that ends the name of every party (not its address),
      to tell the parties of a test from those of the others
    - postal_address: give each party an empty postal address, as a sale
      needs one
    - bulk: insert them with SQL, all at once, as an import would (the
      races need hundreds); for names only, without a language
    - values: more values of every party (active, marketing_timezone...)

    With commit (the default) the work is done in a transaction of its
    own, committed, after which its tasks are run."""
    rows = []
    for party in parties:
        if isinstance(party, str):
            name, address, language = (
                party, email(party) if email else None, None)
        else:
            name, address, *language = party
            language = language[0] if language else None
        rows.append((name, address, language))
    if commit:
        with committed():
            return _create_parties(
                rows, code, suffix, postal_address, bulk, values)
    return Pool().get('party.party').browse(_create_parties(
            rows, code, suffix, postal_address, bulk, values))


def _create_parties(rows, code, suffix, postal_address, bulk, values):
    pool = Pool()
    Party = pool.get('party.party')
    Lang = pool.get('ir.lang')
    if bulk:
        assert not (code or suffix or postal_address or values)
        assert not any(language for _, _, language in rows)
        return _insert_parties(rows)
    creates = []
    for name, address, language in rows:
        value = {'name': f'{name} {suffix}' if suffix else name, **values}
        if code:
            value['code'] = code(name)
        if postal_address:
            value['addresses'] = [('create', [{}])]
        if address:
            value['contact_mechanisms'] = [('create', [{
                            'type': 'email', 'value': address,
                            }])]
        if language:
            lang, = Lang.search([('code', '=', language)])
            value['lang'] = lang.id
        creates.append(value)
    return [p.id for p in Party.create(creates)]


def _insert_parties(rows):
    "Insert the parties of rows with SQL, a statement for all"
    pool = Pool()
    party = pool.get('party.party').__table__()
    mechanism = pool.get('party.contact_mechanism').__table__()
    cursor = Transaction().connection.cursor()
    created = dt.datetime.now()
    codes = [uuid.uuid4().hex for _ in rows]
    cursor.execute(*party.insert(
            [party.create_uid, party.create_date, party.code, party.name,
                party.active],
            [[0, created, code, name, True]
                for code, (name, _, _) in zip(codes, rows)]))
    cursor.execute(*party.select(
            party.id, where=party.code.in_(codes), order_by=[party.id.asc]))
    ids = [i for i, in cursor]
    mechanisms = [
        [0, created, party_id, 'email', address, True]
        for party_id, (_, address, _) in zip(ids, rows) if address]
    if mechanisms:
        cursor.execute(*mechanism.insert(
                [mechanism.create_uid, mechanism.create_date,
                    mechanism.party, mechanism.type, mechanism.value,
                    mechanism.active],
                mechanisms))
    return ids


# Where the links of the emails of the tests lead, and who sends them
BASE = 'http://localhost:8000'
SENDER = 'Marketing Team <news@example.com>'


class SendingTestMixin:
    "What the test cases that send emails share"

    def start_sending(self, options=None, timeout=5):
        """Send the emails of this test to a real SMTP server, self.smtp,
        from SENDER with their links on BASE, and request the routes through
        trytond's WSGI application with self.client

        options ({(section, name): value}) add to that configuration or
        change it; the scenarios left running are stopped after the test."""
        self.smtp = SMTPServer().start()
        self.addCleanup(self.smtp.stop)
        self.configure({
                ('email', 'uri'): self.smtp.uri(timeout=timeout),
                ('marketing', 'automation_base'): BASE,
                ('marketing', 'email_from'): SENDER,
                **(options or {}),
                })
        self.addCleanup(self.stop_scenarios)
        self.client = Client(app, use_cookies=False)

    def running_scenario(self, name, domain, activities, **values):
        """Create a scenario on the parties of domain with activities (and
        the other values), run it and return its id, committed"""
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            scenario, = Scenario.create([{
                        'name': name,
                        'model': 'party.party',
                        'domain': PYSONEncoder().encode(domain),
                        'activities': [('create', activities)],
                        **values,
                        }])
            Scenario.run([scenario])
            return scenario.id

    def trigger(self):
        "Run the trigger cron, and the tasks it queues"
        with committed():
            Pool().get('marketing.automation.scenario').trigger()

    def process(self):
        "Run the process cron, and the tasks it queues"
        with committed():
            Pool().get('marketing.automation.record.activity').process()

    def run_crons(self):
        "Run the trigger cron then the process cron, and their tasks"
        self.trigger()
        self.process()

    def configure(self, values):
        "Set configuration options until the end of the test"
        manager = override_config(values)
        manager.__enter__()
        self.addCleanup(manager.__exit__, None, None, None)

    def stop_scenarios(self):
        "Keep the scenarios of this test from sending in the next ones"
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.stop(Scenario.search([('state', '=', 'running')]))


# The emails of the tests: what a scenario sends and a recipient reads

OFFER = 'https://shop.example.com/offers?from=mail&id=42'
GOODBYE = 'https://www.example.com/goodbye'
ONE_CLICK = 'List-Unsubscribe=One-Click'


def b64(name):
    return base64.urlsafe_b64encode(
        name.encode('utf-8')).decode('ascii').rstrip('=')


DB64 = b64(DB_NAME)
TRACKED = re.compile(
    re.escape(f'{BASE}/s/{DB64}/') + r'(?P<token>[A-Za-z0-9_-]+)$')


def welcome(children=None, **values):
    "The root email: a tracked offer, a mailto and two unsubscribe links"
    activity = {
        'name': "Welcome",
        'action': 'send_email',
        'email_title': "Welcome ${record.name}",
        'email_template': (
            '<p>Hello ${record.name},</p>'
            '<p><a href="https://shop.example.com/offers?from=mail&amp;id=42">'
            'See our offers</a></p>'
            '<p><a href="mailto:help@example.com">Write to us</a></p>'
            '<p><a href="unsubscribe">Unsubscribe</a></p>'
            '<p><a href="unsubscribe|https://www.example.com/goodbye">'
            'Leave for good</a></p>'),
        **values,
        }
    if children:
        activity['children'] = [('create', children)]
    return activity


THANKS = {
    'name': "Thanks",
    'on': 'email_clicked',
    'action': 'send_email',
    'email_title': "Thank you for your visit, ${record.name}",
    'email_template': '<p>We are glad you came.</p>',
    }
REMINDER = {
    'name': "Reminder",
    'on': 'email_opened_not',
    'delay': dt.timedelta(days=2),
    'action': 'send_email',
    'email_title': "Did you see our offers?",
    'email_template': '<p>Our offers end soon.</p>',
    }


class Mail:
    "A received message as a mail client shows it"

    def __init__(self, received):
        self.envelope_from = received.mail_from
        self.envelope_to = received.rcpt_tos
        self.raw = received.data
        self.message = parse_message(received.data)
        self.text = self.message.get_body(('plain',)).get_content()
        self.html = self.message.get_body(('html',)).get_content()
        self.links, self.images = html_links(self.html)

    def __getitem__(self, header):
        return self.message[header]

    def link(self, text):
        "The URL of the link whose text is text"
        urls = [href for href, t in self.links if t == text]
        assert len(urls) == 1, (text, self.links)
        return urls[0]

    @property
    def pixel(self):
        return self.images[-1]


def party_reference(party_id):
    return 'party.party,%s' % party_id


def inspecting():
    "A transaction to look at the database, that changes nothing"
    return Transaction().start(DB_NAME, USER, readonly=True)


def message(msg_id, **variables):
    "The English text of the module's message"
    with inspecting():
        return gettext('marketing_automation.' + msg_id, **variables)


def page_text(response):
    return ' '.join(lxml.html.document_fromstring(
            response.get_data(as_text=True)).text_content().split())


class EmailTestMixin(SendingTestMixin):
    """What the test cases that follow the emails of a scenario to their
    recipients share: the welcome email, the entries and the records of
    the parties, and the emails each one got"""
    def start_scenario(self, party_ids, activities, **values):
        "Create a running scenario on the parties and return its id"
        return self.running_scenario(
            "Spring", [('id', 'in', party_ids)], activities, **values)

    def entry(self, scenario_id, party_id, activity_name):
        "The record activity of the party in the activity"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        entries = RecordActivity.search([
                ('record.scenario', '=', scenario_id),
                ('record.record', '=', party_reference(party_id)),
                ('activity.name', '=', activity_name),
                ])
        self.assertLessEqual(len(entries), 1)
        return entries[0] if entries else None

    def record(self, scenario_id, party_id):
        Record = Pool().get('marketing.automation.record')
        records = Record.search([
                ('scenario', '=', scenario_id),
                ('record', '=', party_reference(party_id)),
                ])
        return records[0] if records else None

    def snapshot(self):
        "What a request could change"
        with inspecting():
            pool = Pool()
            Record = pool.get('marketing.automation.record')
            RecordActivity = pool.get('marketing.automation.record.activity')
            Access = pool.get('web.shortened_url.access')
            Unsubscribed = pool.get(
                'party.party-unsubscribed-marketing.automation.scenario')
            return {
                'records': sorted(
                    (r.id, r.blocked) for r in Record.search([])),
                'entries': sorted(
                    (e.id, e.state, e.at, e.email_opened, e.email_clicked)
                    for e in RecordActivity.search([])),
                'accesses': Access.search([], count=True),
                'unsubscribed': sorted(
                    (u.party.id, u.scenario.id)
                    for u in Unsubscribed.search([])),
                }

    def mails_to(self, address):
        return [Mail(m) for m in self.smtp.to(address)]

    def mail_to(self, address):
        mails = self.mails_to(address)
        self.assertEqual(len(mails), 1, msg=f"emails to {address}")
        return mails[0]

    def send_welcome(self, *parties, **values):
        """Send the welcome email to the parties (name, address) and return
        the scenario id, the party ids and the emails in the same order"""
        party_ids = create_parties(*parties)
        scenario = self.start_scenario(
            party_ids, [welcome([THANKS, REMINDER])], **values)
        self.run_crons()
        return scenario, party_ids, [self.mail_to(p[1]) for p in parties]

    def is_blocked(self, scenario, party):
        with inspecting():
            return self.record(scenario, party).blocked


# What a person's browser says of itself
BROWSER = (
    'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0')


@contextmanager
def event_clock(delta):
    """Move the clock of the event ledger by delta in the block: the
    requests and the decisions happen then (see ledger_now)"""
    from trytond.modules.marketing_automation import (
        marketing_automation_event as events)
    real = events.ledger_now
    with mock.patch.object(events, 'ledger_now', lambda: real() + delta):
        yield


def human_request(client, url, after=timedelta(minutes=2), **kwargs):
    """Follow url as a person does: from a browser, a while after the
    delivery (not at once, as the scanners of the mail gateways do)"""
    kwargs.setdefault('headers', {'User-Agent': BROWSER})
    with event_clock(after):
        return client.get(url, **kwargs)


def decide_events(after=timedelta(minutes=10)):
    """Let the event ledger decide the requests once no trap hit can come
    any more, as the process cron does a while later, and run the tasks"""
    with committed():
        with event_clock(after):
            Pool().get('marketing.automation.event').decide()


def clicked_entry(party, clicked, company, name="Spring"):
    """A new scenario of company with an email activity, and its done entry
    for party whose email was sent and clicked at clicked"""
    pool = Pool()
    Scenario = pool.get('marketing.automation.scenario')
    Record = pool.get('marketing.automation.record')
    RecordActivity = pool.get('marketing.automation.record.activity')
    scenario, = Scenario.create([{
                'name': name,
                'company': company.id,
                'activities': [('create', [{
                                'name': "Offer",
                                'action': 'send_email',
                                'email_title': "Offer",
                                'email_template': '<p>Our offer</p>',
                                }])],
                }])
    record, = Record.create([{
                'scenario': scenario.id,
                'record': str(party),
                'uuid': uuid.uuid4().hex,
                }])
    entry, = RecordActivity.create([{
                'record': record.id,
                'activity': scenario.activities[0].id,
                'state': 'done',
                'at': clicked,
                'email_sent': True,
                'email_clicked': True,
                }])
    table = RecordActivity.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.update(
            [table.email_last_clicked], [clicked],
            where=table.id == entry.id))
    return scenario


def confirm_sale(company, party, amount, currency=None, description=None):
    """A sale of company to party (who has an address) of one line of
    amount, confirmed: the confirmation attributes it"""
    Sale = Pool().get('sale.sale')
    sale, = Sale.create([{
                'company': company.id,
                'currency': (currency or company.currency).id,
                'party': party.id,
                'description': description,
                'invoice_address': party.addresses[0].id,
                'invoice_method': 'manual',
                'shipment_method': 'manual',
                'lines': [('create', [{
                                'description': "Chair",
                                'quantity': 1,
                                'unit_price': Decimal(amount),
                                }])],
                }])
    Sale.quote([sale])
    Sale.confirm([sale])
    return sale


def without_company(scenario_ids):
    """Take their company from the scenarios, as a database of Tryton's own
    module has them (the column takes NULL again)"""
    Scenario = Pool().get('marketing.automation.scenario')
    table = Scenario.__table__()
    cursor = Transaction().connection.cursor()
    Scenario.__table_handler__().not_null_action('company', 'remove')
    cursor.execute(*table.update(
            [table.company], [None], where=table.id.in_(scenario_ids)))


# The reporting's entries: an email activity, and entries written as the
# engine leaves them, without sending anything
EMAIL = {
    'action': 'send_email',
    'email_title': "Hello",
    'email_template': '<p>Hello</p>',
    }
THIS_MONTH = dt.date.today().replace(day=1)


def at(month, day=2):
    "A time in month, away from the boundaries of the periods"
    return dt.datetime.combine(month.replace(day=day), dt.time(12))


def create_running_scenario(activities, name="Welcome"):
    "A running scenario on parties with activities (and no domain)"
    Scenario = Pool().get('marketing.automation.scenario')
    scenario, = Scenario.create([{
                'name': name,
                'model': 'party.party',
                'activities': [('create', activities)],
                }])
    Scenario.run([scenario])
    return scenario


def create_records(scenario, count, blocked=0):
    "count records of new parties in scenario, the first blocked ones"
    Record = Pool().get('marketing.automation.record')
    parties = create_parties(
        *("Party %s" % i for i in range(count)), email=None, commit=False)
    return Record.create([{
                'scenario': scenario.id,
                'record': str(party),
                'uuid': uuid.uuid4().hex,
                'blocked': i < blocked,
                } for i, party in enumerate(parties)])


def create_entries(activity, *entries):
    """Done entries of activity, one per dict of values, each for a record
    of a new party"""
    RecordActivity = Pool().get('marketing.automation.record.activity')
    records = create_records(activity.parent, len(entries))
    return RecordActivity.create([{
                'record': record.id,
                'activity': activity.id,
                'state': 'done',
                'at': at(THIS_MONTH),
                **values,
                } for record, values in zip(records, entries)])


def sent(opened=False, clicked=False, month=THIS_MONTH):
    return {
        'email_sent': True,
        'email_opened': opened or clicked,
        'email_clicked': clicked,
        'at': at(month),
        }


def reporting(model, domain=None, **context):
    """The rows of the reporting of model as dicts, ordered by date, for all
    time and by month unless context says otherwise"""
    Reporting = Pool().get('marketing.automation.reporting.%s' % model)
    context.setdefault('period', 'month')
    with Transaction().set_context(context):
        return Reporting.search_read(domain or [], fields_names=[
                f for f in Reporting._fields
                if f not in {'rec_name', 'create_uid', 'create_date',
                    'write_uid', 'write_date'}])


# A user of the Tryton client

class RPCError(Exception):
    "The error a JSON-RPC call answered"


class Session:
    """A user logged in over JSON-RPC, calling the server as the client does,
    on the test database or on another one"""

    def __init__(self, login, password, database=DB_NAME):
        self.client = Client(app, use_cookies=False)
        self.database = database
        self.headers = {}
        self.user_id, session, _ = self.call(
            'common.db.login', login, {'password': password}, 'en')
        credentials = f'{login}:{self.user_id}:{session}'.encode('utf-8')
        self.headers['Authorization'] = (
            'Session ' + base64.b64encode(credentials).decode('ascii'))

    def call(self, method, *params):
        response = self.client.post(
            f'/{self.database}/rpc/', headers=self.headers, json={
                'id': 1,
                'method': method,
                'params': list(params),
                })
        assert response.status_code == 200, (method, response.status)
        answer = response.get_json()
        if 'error' in answer:
            raise RPCError(*answer['error'])
        return answer['result']

    def model(self, name, method, *params):
        "Call the method of the model with params and an empty context"
        return self.call(f'model.{name}.{method}', *params, {})
