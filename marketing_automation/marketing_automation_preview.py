# SPDX-License-Identifier: GPL-3.0-or-later
"""See an email before its recipients do.

- ``Trial`` makes the email of an activity for one record through the
  pipeline of the send_email action (``EmailBatch``), as its recipient would
  get it, but with its links going straight to their targets: it creates no
  tracked link, no email in the outbox, no entry, and counts nothing.
- The wizard ``marketing.automation.activity.preview`` (the ``preview``
  button of an activity) shows that email for the record and the language a
  marketer picks, opens its HTML in the browser through the preview route
  with a short-lived signed token (``urls.preview_token``), and sends it as
  a test email, marked ``[Test]``, to the addresses the marketer types
  (``mailing.parse_addresses``), through the mail server of the real emails
  and the transport of the outbox (``smtp.Transport``); the test emails are
  logged in ``ir.email`` before they leave, under a lock of the user, and
  count against the user's limit.

Who a scenario will reach is counted in ``audience.py``.
"""
import datetime
import email
import email.policy
import functools
import html as html_escaping
import secrets
from collections import namedtuple
from http import HTTPStatus

import lxml.html
from sql import Conflict, Literal
from sql.aggregate import Count

from trytond.config import config
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.sendmail import get_smtp_server
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction
from trytond.wizard import (
    Button, StateAction, StateTransition, StateView, Wizard)

from . import mailing, smtp, tools, urls
from .engine import Entry, marketing_parties
from .exceptions import ActivityFault, PreviewError
from .mailing import parse_addresses
from .marketing_automation_email import (
    SEND_EMAIL, EmailBatch, Recipient, email_address, party_recipients)
from .mixin import MarketingAutomationMixin
from .tools import contained
# the signed tokens, named here too as the preview reads and writes them
from .urls import PREVIEW_PURPOSE as PREVIEW  # noqa: F401
from .urls import TEST_UNSUBSCRIBE_PURPOSE as TEST_UNSUBSCRIBE
from .urls import Ticket, preview_token, read_preview_token, seal, unseal

TEST_MARK = '[Test]'


# The email of one record, as its recipient would get it

Composed = namedtuple(
    'Composed', ['sender', 'to', 'subject', 'message_id', 'message'])
Composed.__doc__ = "An email made by a Trial, with its MIME bytes"


class TrialError(Exception):
    "Why the email of a trial cannot be made, as the marketer reads it"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Trial(EmailBatch):
    """The email of an activity for one record in a language, made by the
    pipeline of the send_email action as for its recipient, but with its
    links going straight to their targets: the unsubscribe links to the
    unsubscribe page of test emails, which changes nothing, and the
    open-tracking image to the empty image.

    Without addresses, it makes the email to the record's party (a
    preview); with addresses, (name, address) pairs, a test email to each,
    with the mark in its subject.  It creates nothing: its messages stay in
    ``composed``, and ``targets`` tells where each URL of them leads."""

    def __init__(self, activity, record, language, addresses=None):
        self.record = record
        self.language = language
        self.addresses = addresses
        count = len(addresses) if addresses is not None else 1
        entries = [Entry(i, None, str(record)) for i in range(count)]
        super().__init__(activity, entries, {e.id: record for e in entries})
        self.composed = []
        self.targets = {}

    def compose(self):
        "The Composed emails, or TrialError with why they cannot be made"
        check_trial(self.activity, self.record)
        try:
            errors = self.store()
        except ActivityFault as fault:
            raise TrialError(fault.message) from fault
        if errors:
            raise TrialError(next(iter(errors.values())))
        return self.composed

    def recipients(self):
        party = marketing_parties([self.record]).get(self.record)
        name, address, _ = party_recipients({party}).get(
            party, (None, None, None)) if party else (None, None, None)
        if self.addresses is not None:
            pairs = self.addresses
        elif address:
            pairs = [(name, address)]
        else:
            self.errors[0] = gettext(
                'marketing_automation.msg_email_no_address', party=name or '')
            return {}
        return {self.language: [
                Recipient(entry, self.record, None, n, a, self.language)
                for entry, (n, a) in zip(self.entries, pairs)]}

    def _urls(self, entry_id, uuid, links):
        result = []
        for link in links:
            if link.kind == mailing.CLICK:
                url = self.targets[link.url] = link.url
            elif link.kind == mailing.UNSUBSCRIBE:
                url = self._test_unsubscribe_url(link.url)
                self.targets[url] = gettext(
                    'marketing_automation.msg_preview_unsubscribe_next',
                    next=link.url) if link.url else gettext(
                    'marketing_automation.msg_preview_unsubscribe')
            elif link.kind == mailing.TRAP:
                url = urls.empty_page_url(self.base)
            else:
                # the open-tracking image and the links only the server
                # follows, which only record what happened
                url = link.url or urls.empty_gif_url(self.base)
            result.append(url)
        return result

    def _test_unsubscribe_url(self, next=None):
        return urls.test_unsubscribe_url(
            self.base, self.database, seal(
                self.secret, TEST_UNSUBSCRIBE,
                [self.activity.id, self.language, next]))

    def _subject(self, subject):
        if self.addresses is None:
            return subject
        return '%s %s' % (TEST_MARK, subject)

    def _message_id(self, recipient):
        return mailing.message_id(
            'test.%s.%s' % (secrets.token_hex(8), self.activity.id),
            self.domain)

    def _unsubscribe_url(self, recipient):
        return self._test_unsubscribe_url()

    def _keep(self, entry_id, message_id, sender, to, subject, message):
        self.composed.append(
            Composed(sender, to, subject, message_id, message))

    def _insert(self):
        pass


def check_trial(activity, record):
    "Raise TrialError unless activity sends an email that record may get"
    pool = Pool()
    if activity.action != SEND_EMAIL:
        raise TrialError(gettext(
                'marketing_automation.msg_preview_not_email',
                activity=activity.rec_name))
    scenario = activity.scenario
    model = getattr(record, '__name__', None)
    exists = False
    if model == scenario.model and record.id is not None and record.id >= 0:
        Model = pool.get(model)
        with Transaction().set_context(active_test=False):
            exists = bool(Model.search([('id', '=', record.id)], limit=1))
    if not exists:
        Model = pool.get('ir.model')
        raise TrialError(gettext(
                'marketing_automation.msg_preview_record',
                model=Model.get_name(scenario.model),
                scenario=scenario.rec_name))


def read_message(message):
    "The message of bytes as a mail client reads it"
    return email.message_from_bytes(
        bytes(message), policy=email.policy.default)


def message_parts(message):
    "The plain text and the HTML of a message of read_message"
    text = message.get_body(('plain',))
    html = message.get_body(('html',))
    return (text.get_content() if text else '',
        html.get_content() if html else '')


def check_marketer():
    "Raise AccessError unless the user is of the Marketing group"
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    if Transaction().user == 0:
        return
    group = ModelData.get_id('marketing', 'group_marketing')
    if group not in User.get_groups():
        raise AccessError(gettext('marketing_automation.msg_preview_access'))


def record_language(record):
    "The language of the recipient of record, as its emails are written in"
    pool = Pool()
    Lang = pool.get('ir.lang')
    party = marketing_parties([record]).get(record)
    code = party_recipients({party})[party][2] if party else config.get(
        'database', 'language', default='en')
    langs = Lang.search([('code', '=', code)], limit=1)
    return langs[0] if langs else None


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'preview': {
                    'invisible': Eval('action') != SEND_EMAIL,
                    'depends': ['action'],
                    },
                })

    @classmethod
    def view_attributes(cls):
        # the client greys out the button until the activity is saved
        return super().view_attributes() + [
            ('//label[@id="preview_unsaved"]', 'states', {
                    'invisible': (Eval('action') != SEND_EMAIL)
                    | (Eval('id', -1) >= 0),
                    }),
            ]

    @classmethod
    @ModelView.button_action('marketing_automation.wizard_activity_preview')
    def preview(cls, activities):
        pass


class ActivityPreviewStart(ModelView):
    "The email of an activity for a record, as its recipient would get it"
    __name__ = 'marketing.automation.activity.preview.start'

    activity = fields.Many2One(
        'marketing.automation.activity', "Activity", readonly=True)
    model = fields.Char("Model", readonly=True)
    record = fields.Reference(
        "Record", selection='get_models', required=True,
        help="The record whose email is shown: any record of the model of "
        "the scenario.")
    language = fields.Many2One(
        'ir.lang', "Language", required=True,
        help="The language of the email: the language of the record's "
        "party by default.")
    sender = fields.Char("From", readonly=True)
    to = fields.Char("To", readonly=True)
    subject = fields.Char("Subject", readonly=True)
    text = fields.Text("Plain Text", readonly=True)
    links = fields.Text(
        "Links", readonly=True,
        help="The text of each link of the email and where it leads.")
    error = fields.Text(
        "Error", readonly=True,
        states={
            'invisible': ~Eval('error'),
            })
    test_addresses = fields.Char(
        "Send a Test To",
        help="The addresses the test email goes to, separated by commas.\n"
        "The test email is marked [Test] in its subject, its links are not "
        "tracked and its unsubscribe link changes nothing.")
    test_result = fields.Text(
        "Test Email", readonly=True,
        states={
            'invisible': ~Eval('test_result'),
            })

    @fields.depends('model')
    def get_models(self):
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        return [(m, n) for m, n in Scenario.get_models()
            if not self.model or m == self.model]

    @fields.depends('record', methods=['show'])
    def on_change_record(self):
        check_marketer()
        if isinstance(self.chosen_record(), MarketingAutomationMixin):
            self.language = record_language(self.record)
        self.show()

    @fields.depends(methods=['show'])
    def on_change_language(self):
        self.show()

    def chosen_record(self):
        "The record chosen, None while there is none"
        if (self.record and self.record.id is not None
                and self.record.id >= 0):
            return self.record

    @fields.depends('activity', 'record', 'language')
    def show(self):
        "Show the email of the chosen record in the chosen language"
        for name in ['sender', 'to', 'subject', 'text', 'links', 'error']:
            setattr(self, name, None)
        # any user may call the on_change of a form of no table
        check_marketer()
        if not (self.activity and self.chosen_record() and self.language):
            return
        trial = Trial(self.activity, self.record, self.language.code)
        try:
            composed, = trial.compose()
        except TrialError as error:
            self.error = error.message
            return
        message = read_message(composed.message)
        self.sender = message['From']
        self.to = message['To']
        self.subject = message['Subject']
        self.text, html = message_parts(message)
        self.links = '\n'.join(
            '%s: %s' % (text, trial.targets.get(href, href))
            for href, text in _links(html))


def _links(html):
    "The (href, text) of the links of html that a reader sees"
    document = lxml.html.document_fromstring(html)
    for anchor in document.iter('a'):
        href = anchor.get('href')
        if not href or anchor.get('aria-hidden') == 'true':
            continue
        yield href, ' '.join(anchor.text_content().split()) or href


class PreviewRefused(Exception):
    "A request of the preview routes that gets no page, with its status"

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class ActivityPreview(Wizard):
    """Preview the email of an activity for a record, open it in the
    browser, and send it as a test email"""
    __name__ = 'marketing.automation.activity.preview'

    start = StateView(
        'marketing.automation.activity.preview.start',
        'marketing_automation.activity_preview_start_view_form', [
            Button("Close", 'end', 'tryton-close'),
            Button("Open in Browser", 'open_', 'tryton-public'),
            Button("Send Test", 'send', 'tryton-email', default=True),
            ])
    open_ = StateAction('marketing_automation.url_activity_preview')
    send = StateTransition()

    def value_start(self, fields):
        # values, not defaults: the client would run the on_change of the
        # record, which resets the language the marketer chose
        pool = Pool()
        User = pool.get('res.user')
        check_marketer()
        start = self.start
        if not start.activity:
            # the first time; afterwards, the choices of the marketer stay
            activity = self.record
            if not activity or activity.action != SEND_EMAIL:
                raise PreviewError(gettext(
                        'marketing_automation.msg_preview_not_email',
                        activity=activity.rec_name if activity else ''))
            scenario = activity.scenario
            start.activity = activity
            start.model = scenario.model
            start.record = first_record(scenario)
            start.language = (
                record_language(start.record) if start.record
                else default_language())
            start.test_addresses = User(Transaction().user).email
        start.show()
        values = {
            name: getattr(start, name) for name in [
                'model', 'sender', 'to', 'subject', 'text', 'links',
                'error', 'test_addresses', 'test_result']}
        values['activity'] = start.activity.id
        values['record'] = (
            str(start.record) if start.chosen_record() else None)
        values['language'] = start.language.id if start.language else None
        return values

    def do_open_(self, action):
        pool = Pool()
        Secret = pool.get('marketing.automation.email.secret')
        check_marketer()
        start = self.start
        try:
            check_trial(start.activity, start.record)
        except TrialError as error:
            raise PreviewError(error.message) from error
        expires = int(tools.now().timestamp()) + 60 * config.getint(
            'marketing', 'preview_expiry', default=10)
        token = preview_token(Secret.get(), Ticket(
                Transaction().user, start.activity.id, str(start.record),
                start.language.code, expires))
        action['url'] = urls.preview_url(urls.base(), urls.database(), token)
        return action, {}

    def transition_open_(self):
        return 'start'

    def transition_send(self):
        check_marketer()
        start = self.start
        start.test_result = None
        try:
            addresses = parse_addresses(start.test_addresses)
        except ValueError as exception:
            raise PreviewError(gettext(
                    'marketing_automation.msg_preview_test_address',
                    address=exception.args[0])) from exception
        if not addresses:
            raise PreviewError(gettext(
                    'marketing_automation.msg_preview_test_no_address'))
        trial = Trial(
            start.activity, start.record, start.language.code, addresses)
        try:
            composed = trial.compose()
        except TrialError as error:
            raise PreviewError(gettext(
                    'marketing_automation.msg_preview_test_not_sent',
                    error=error.message)) from error
        logged = reserve_tests(start.activity, start.record, composed)
        sent, errors, unsure = deliver_tests(composed)
        left = {c.to for c in sent + unsure}
        forget_tests([
                i for i, c in zip(logged, composed) if c.to not in left])
        results = []
        if sent:
            results.append(gettext(
                    'marketing_automation.msg_preview_test_sent',
                    addresses=', '.join(c.to for c in sent)))
        for to, error in errors.items():
            results.append(gettext(
                    'marketing_automation.msg_preview_test_refused',
                    address=to, error=error))
        start.test_result = '\n'.join(results)
        return 'start'

    @classmethod
    def preview_page(cls, token):
        """The status and the HTML of the email of a preview token, for the
        preview route, or PreviewRefused

        The email is made as the user of the token sees it in the wizard,
        while the user is still an active member of the Marketing group."""
        pool = Pool()
        Secret = pool.get('marketing.automation.email.secret')
        User = pool.get('res.user')
        Activity = pool.get('marketing.automation.activity')
        Lang = pool.get('ir.lang')
        transaction = Transaction()
        try:
            ticket = read_preview_token(Secret.get(), token)
        except ValueError:
            raise PreviewRefused(HTTPStatus.NOT_FOUND)
        if ticket.expires < tools.now().timestamp():
            raise PreviewRefused(HTTPStatus.GONE)
        if not User.search([('id', '=', ticket.user)], limit=1):
            raise PreviewRefused(HTTPStatus.FORBIDDEN)
        with transaction.set_user(ticket.user):
            try:
                check_marketer()
            except AccessError:
                raise PreviewRefused(HTTPStatus.FORBIDDEN)
            context = User.get_preferences(context_only=True)
        activities = Activity.search([('id', '=', ticket.activity)], limit=1)
        model, record_id = ticket.record.split(',')
        try:
            Model = pool.get(model)
        except KeyError:
            raise PreviewRefused(HTTPStatus.NOT_FOUND)
        if (not activities
                or not Lang.search([('code', '=', ticket.language)])):
            raise PreviewRefused(HTTPStatus.NOT_FOUND)
        activity, = activities
        with transaction.set_user(ticket.user), \
                transaction.set_context(context):
            trial = Trial(activity, Model(int(record_id)), ticket.language)
            try:
                composed, = trial.compose()
            except TrialError as error:
                return HTTPStatus.UNPROCESSABLE_ENTITY, _error_page(
                    error.message)
        _, html = message_parts(read_message(composed.message))
        return HTTPStatus.OK, html

    @classmethod
    def test_unsubscribe_link(cls, token):
        """The language and the signed next URL of the unsubscribe link of a
        test email, for the test unsubscribe route, or PreviewRefused"""
        pool = Pool()
        Secret = pool.get('marketing.automation.email.secret')
        try:
            activity_id, language, next_ = unseal(
                Secret.get(), TEST_UNSUBSCRIBE, token)
        except ValueError:
            raise PreviewRefused(HTTPStatus.NOT_FOUND)
        if not isinstance(language, str) or not urls.LANGUAGE_CODE.fullmatch(
                language):
            raise PreviewRefused(HTTPStatus.NOT_FOUND)
        if not (isinstance(next_, str) and mailing.is_web_url(next_)):
            next_ = None
        return language, next_


def _error_page(message):
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"/>'
        '<meta name="robots" content="noindex"/></head>'
        '<body><pre style="white-space: pre-wrap">%s</pre></body></html>'
        % html_escaping.escape(message))


def first_record(scenario):
    "The first record that the domain of scenario selects, None if none"
    Model = Pool().get(scenario.model)
    found = []

    def search():
        found.extend(Model.search(
                scenario.decoded_domain(), order=[('id', 'ASC')], limit=1))
    # a domain that fails leaves the choice to the marketer
    contained(search)
    return found[0] if found else None


def default_language():
    Lang = Pool().get('ir.lang')
    langs = Lang.search([
            ('code', '=', config.get('database', 'language', default='en')),
            ], limit=1)
    return langs[0] if langs else None


def reserve_tests(activity, record, composed):
    """Log the Composed test emails of the activity for record before they
    leave, and commit, or raise PreviewError when they would pass the limit
    of the user for the last hour; return the ids of their logs

    The emails are counted and logged while the user's row is locked, so
    that a send that comes at the same time counts them; and the
    transaction is committed before they leave, so that they stay counted
    whatever becomes of the rest of it: neither a rollback nor the server
    running the send again can let more leave."""
    lock_tests()
    check_test_limit(len(composed))
    logged = log_tests(activity, record, composed)
    Transaction().commit()
    return logged


def lock_tests():
    """Take the row of the test sends of the user for this transaction

    The row is written, not only locked: on PostgreSQL a send that waited
    for it fails to serialize and starts again with a snapshot that sees
    the emails logged by this one; on SQLite the write takes the lock of
    the database before the count is read."""
    pool = Pool()
    TestSender = pool.get('marketing.automation.test.sender')
    table = TestSender.__table__()
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    now = datetime.datetime.now()
    user = transaction.user
    if transaction.database.has_insert_on_conflict():
        cursor.execute(*table.insert(
                [table.create_uid, table.create_date, table.user],
                [[user, now, user]],
                on_conflict=Conflict(
                    table, indexed_columns=[table.user],
                    columns=[table.write_uid, table.write_date],
                    values=[user, now])))
        return
    cursor.execute(*table.update(
            [table.write_uid, table.write_date], [user, now],
            where=table.user == user))
    if not cursor.rowcount:
        cursor.execute(*table.insert(
                [table.create_uid, table.create_date, table.user],
                [[user, now, user]]))


def check_test_limit(count):
    """Raise PreviewError when count more test emails would pass the limit
    of the user for the last hour"""
    pool = Pool()
    IrEmail = pool.get('ir.email')
    ir_email = IrEmail.__table__()
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    limit = config.getint('marketing', 'test_email_limit', default=20)
    since = datetime.datetime.now() - datetime.timedelta(hours=1)
    cursor.execute(*ir_email.select(
            Count(),
            where=(ir_email.create_uid == transaction.user)
            & (ir_email.marketing_automation_test == Literal(True))
            & (ir_email.create_date >= since)))
    sent, = cursor.fetchone()
    if sent + count > limit:
        raise PreviewError(gettext(
                'marketing_automation.msg_preview_test_limit',
                limit=limit, sent=sent, count=count))


def deliver_tests(composed):
    """Send the Composed test emails through the mail server of the real
    ones; return those it accepted, the errors of the others by recipient,
    and those of them that may have left all the same

    The server's refusal of a message means it did not leave; but the
    message on its way when the connection is lost may have, and is
    counted.  The messages after it are not tried."""
    sent, errors, unsure = [], {}, []
    # the mail server itself, even under the tests of Tryton's own module
    connect = functools.partial(get_smtp_server, strict=True)
    with smtp.Transport(connect) as transport:
        for index, email_ in enumerate(composed):
            reply = transport.send(
                email_address(email_.sender), email_address(email_.to),
                email_.message)
            if reply.outcome == smtp.ACCEPTED:
                sent.append(email_)
            elif reply.outcome in {smtp.UNREACHABLE, smtp.LOGIN_REFUSED}:
                if reply.unsure:
                    unsure.append(email_)
                errors.update({c.to: reply.error for c in composed[index:]})
                break
            else:
                errors[email_.to] = reply.error
    return sent, errors, unsure


def log_tests(activity, record, composed):
    """Log the Composed test emails of the activity for record in ir.email;
    return the ids of their logs"""
    IrEmail = Pool().get('ir.email')
    return [e.id for e in IrEmail.create([{
                    'recipients': email_.to,
                    'subject': email_.subject,
                    'message_id': email_.message_id,
                    'resource': str(record),
                    'marketing_automation_activity': activity.id,
                    'marketing_automation_test': True,
                    'addresses': [
                        ('create', [{'address': email_address(email_.to)}])],
                    } for email_ in composed])]


def forget_tests(ids):
    """Delete the logs of ids of test emails that did not leave: they count
    no more"""
    pool = Pool()
    IrEmail = pool.get('ir.email')
    Address = pool.get('ir.email.address')
    ir_email = IrEmail.__table__()
    address = Address.__table__()
    cursor = Transaction().connection.cursor()
    for sub in grouped_slice(ids):
        sub = list(sub)
        cursor.execute(*address.delete(where=reduce_ids(address.email, sub)))
        cursor.execute(*ir_email.delete(
                where=reduce_ids(ir_email.id, sub)
                & (ir_email.marketing_automation_test == Literal(True))))


class TestSender(ModelSQL):
    """The row of a user that the test sends lock, to count and log the
    test emails of the user one send after the other"""
    __name__ = 'marketing.automation.test.sender'

    user = fields.Many2One(
        'res.user', "User", required=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('user_unique', Unique(t, t.user),
                'marketing_automation.msg_test_sender_unique'),
            ]
