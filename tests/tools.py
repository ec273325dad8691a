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
the revenue counts.
"""
import asyncio
import email
import email.policy
import logging
import os
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

from trytond import backend, config
from trytond.pool import Pool
from trytond.pyson import PYSONEncoder
from trytond.tests.test_tryton import DB_NAME, USER
from trytond.transaction import Transaction
from trytond.worker import run_task

__all__ = [
    'Received', 'SMTPServer', 'override_config', 'committed', 'run_queue',
    'shared_database', 'parse_message', 'html_links', 'SendingTestMixin',
    'BROWSER', 'event_clock', 'human_request', 'decide_events',
    'without_mjml_compilers', 'clicked_entry', 'confirm_sale',
    'without_company']

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
        from werkzeug.test import Client

        from trytond.wsgi import app
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
