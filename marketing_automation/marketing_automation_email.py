# SPDX-License-Identifier: GPL-3.0-or-later
"""The send_email action: from due record activities to accepted messages.

An email goes through two steps, each in its own transaction:

1. ``prepare`` (inside ``RecordActivity.do``) renders the messages of a batch,
   creates their tracked links and stores each message as a
   ``marketing.automation.email`` waiting for delivery; the record activity
   stays waiting.
2. ``Email.deliver`` hands the messages to the SMTP server over one
   connection and commits the acceptance of each message before sending the
   next, then marks the record activities done and enters their records
   into the children.

So a message is never sent for work that was rolled back, an entry is done
only once the server has accepted its message, and a process killed while
delivering sends at most the message in flight twice (with the same
Message-ID).  Transient failures leave the message waiting for a later run,
with a growing delay; permanent ones are written on the record activity.
"""
import datetime
import logging
import smtplib
import socket
import urllib.parse
from collections import defaultdict
from email.utils import parseaddr

from sql import Literal, Null

from trytond import backend
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.sendmail import get_smtp_server
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction
from trytond.url import http_host
from trytond.wsgi import Base64Converter

from . import mailing, sandbox
from .exceptions import ActivityFault, TemplateError
from .tools import BROWSE_SIZE, for_update, queue, quick_commits
from .web import EMAIL_CLICKED, EMAIL_OPENED, RECORD_ACTIVITY

logger = logging.getLogger(__name__)

# How long a delivery may hold its messages before another run takes them
LEASE = datetime.timedelta(minutes=10)
MAX_ATTEMPTS = 10


def automation_base():
    "The scheme and host of the URLs written into the emails"
    base = config.get('marketing', 'automation_base')
    if not base:
        base = http_host()
    return base.rstrip('/')


def email_domain():
    return urllib.parse.urlsplit(automation_base()).hostname or 'localhost'


def database_b64():
    return Base64Converter(None).to_url(Transaction().database.name)


def retry_delay(attempts):
    "The delay before the next attempt after attempts failed deliveries"
    return min(
        datetime.timedelta(minutes=5) * 2 ** max(attempts - 1, 0),
        datetime.timedelta(hours=6))


def check_templates(activity):
    """Refuse the activity if its title or its template does not compile,
    or if its sender is not an email address"""
    Activity = activity.__class__
    languages = _languages()
    for code in languages:
        with Transaction().set_context(language=code):
            translated = Activity(activity.id) if activity.id else activity
            title, template, sender = (
                translated.email_title, translated.email_template,
                translated.email_from)
        if sender:
            try:
                mailing.check_sender(sender)
            except ValueError as exception:
                raise TemplateError(gettext(
                        'marketing_automation.msg_activity_invalid_email_from',
                        sender=sender,
                        activity=activity.rec_name)) from exception
        for source, check, message in [
                (title, mailing.check_title,
                    'msg_activity_invalid_email_title'),
                (template, mailing.check_body,
                    'msg_activity_invalid_email_template'),
                ]:
            if not source:
                continue
            try:
                check(source)
            except Exception as exception:
                raise TemplateError(gettext(
                        'marketing_automation.' + message,
                        activity=activity.rec_name,
                        exception=exception)) from exception


def _languages():
    pool = Pool()
    Lang = pool.get('ir.lang')
    return [l.code for l in Lang.search([('translatable', '=', True)])] or [
        Transaction().context.get('language') or 'en']


def _sender(activity):
    return (activity.email_from
        or config.get('marketing', 'email_from')
        or config.get('email', 'from'))


def _checked_sender(activity):
    "The sender of the activity's emails, or ActivityFault"
    sender = _sender(activity)
    try:
        mailing.check_sender(sender)
    except ValueError as exception:
        raise ActivityFault(gettext(
                'marketing_automation.msg_activity_invalid_email_from',
                sender=sender, activity=activity.rec_name)) from exception
    return sender


def _compiled(activity):
    "The compiled templates of the activity, or ActivityFault"
    try:
        templates = mailing.compile_templates(
            activity.email_title, activity.email_template)
        mailing.check_links(templates.body)
    except Exception as exception:
        raise ActivityFault(gettext(
                'marketing_automation.msg_activity_fault_template',
                activity=activity.rec_name, error=exception)) from exception
    return templates


class _Renderer:
    """Renders the emails of one batch of an activity, each in the sandbox

    It keeps the access checks of the batch and tells whether the failures
    of the recipients are the template's (a fault of the activity) or
    theirs."""

    def __init__(self, activity):
        self.activity = activity
        self.accesses = {}
        self.attempts = 0
        self.failures = []
        # Access is checked for a real user: the author of the activity
        # (root, who may read everything, lends the administrator's).
        self.author = (
            activity.create_uid.id if activity.create_uid else 0) or 1
        self.timeout = config.getfloat(
            'marketing', 'render_timeout', default=10) or None

    def render(self, templates, record, language):
        "The Rendered email of record, or None after a recipient's error"
        self.attempts += 1
        try:
            with Transaction().set_user(self.author):
                context = self._context(record, language)
                return mailing.render(
                    templates, context, timeout=self.timeout)
        except mailing.RenderError as exception:
            if exception.fault:
                raise ActivityFault(gettext(
                        'marketing_automation.msg_activity_fault_template',
                        activity=self.activity.rec_name,
                        error=exception)) from exception
            self.failures.append(exception)
            raise

    def _context(self, record, language):
        key = repr(sorted(record.marketing_access_context.items()))
        access = self.accesses.get(key)
        if access is None:
            access = self.accesses[key] = sandbox.Access(
                record.marketing_access_context)
        context = self.activity.email_context(record)
        context.setdefault('language', language)
        return access.context(context)

    def check(self):
        """Raise ActivityFault when the template failed for every recipient
        it was rendered for, and for more than one"""
        if self.failures and len(self.failures) == self.attempts > 1:
            raise ActivityFault(gettext(
                    'marketing_automation.msg_activity_fault_template',
                    activity=self.activity.rec_name,
                    error=self.failures[0]))


def prepare(activity, records):
    """Render the emails of the record activities and store them for delivery

    records maps the id of each record activity to the instance of its
    underlying record.
    Returns a dictionary: record activity id → why no email was made for
    it.  Raise ActivityFault when the error is not one recipient's (the
    sender, the template for everyone): nothing must then be kept of the
    batch, its entries wait for the activity to be fixed."""
    pool = Pool()
    Activity = pool.get('marketing.automation.activity')
    ShortenedURL = pool.get('web.shortened_url')
    Email = pool.get('marketing.automation.email')
    Secret = pool.get('marketing.automation.email.secret')
    transaction = Transaction()
    cursor = transaction.connection.cursor()

    uuids = _record_uuids(list(records))
    parties = _marketing_parties(records.values())
    recipients = _recipients(set(filter(None, parties.values())))
    errors = {}
    by_language = defaultdict(list)
    for record_activity_id, record in records.items():
        party = parties.get(record)
        name, address, language = recipients.get(party, (None, None, None))
        if not address:
            errors[record_activity_id] = gettext(
                'marketing_automation.msg_email_no_address',
                party=name or '')
            continue
        by_language[language].append(
            (record_activity_id, record, uuids[record_activity_id],
                name, address))

    base = automation_base()
    database = database_b64()
    domain = email_domain()
    secret = Secret.get()
    # whole seconds: PostgreSQL rounds the microseconds of a timestamp(0),
    # which could put the first attempt after the delivery that follows
    now = datetime.datetime.now().replace(microsecond=0)
    links, emails = [], []
    renderer = _Renderer(activity)
    for language, entries in by_language.items():
        with transaction.set_context(language=language):
            translated = Activity(activity.id)
            templates = _compiled(translated)
            sender = _checked_sender(translated)
            for record_activity_id, record, uuid, name, address in entries:
                try:
                    rendered = renderer.render(templates, record, language)
                    recipient = mailing.format_recipient(name, address)
                except (mailing.RenderError, ValueError) as exception:
                    errors[record_activity_id] = gettext(
                        'marketing_automation.msg_email_render_error',
                        exception=exception)
                    continue
                reference = '%s,%s' % (RECORD_ACTIVITY, record_activity_id)
                first_link, urls = len(links), []
                for link in rendered.links:
                    if link.kind == mailing.UNSUBSCRIBE:
                        urls.append(mailing.unsubscribe_url(
                                base, transaction.database.name,
                                uuid, link.url, secret))
                        continue
                    token = mailing.new_token()
                    if link.kind == mailing.OPEN:
                        redirect, method = base + '/m/empty.gif', EMAIL_OPENED
                    else:
                        redirect, method = link.url, EMAIL_CLICKED
                    links.append(
                        [transaction.user, now, redirect, reference, method,
                            token])
                    urls.append(ShortenedURL.token_url(token, base, database))
                html = mailing.fill(rendered.html, urls)
                text = mailing.fill(rendered.text, urls, quote=False)
                message_id = mailing.message_id(
                    '%s.%s' % (uuid, activity.id), domain)
                try:
                    message = mailing.build_message(
                        sender, recipient, rendered.subject, html,
                        text, message_id=message_id,
                        unsubscribe=mailing.unsubscribe_url(
                            base, transaction.database.name, uuid),
                        language=language)
                except ValueError as exception:
                    errors[record_activity_id] = gettext(
                        'marketing_automation.msg_email_render_error',
                        exception=exception)
                    del links[first_link:]
                    continue
                emails.append(
                    [transaction.user, now, record_activity_id, message_id,
                        _address(sender), _address(recipient), recipient,
                        rendered.subject, message, 'pending', 0, now])
    renderer.check()

    url_table = ShortenedURL.__table__()
    for sub in grouped_slice(links, 500):
        cursor.execute(*url_table.insert(
                [url_table.create_uid, url_table.create_date,
                    url_table.redirect_url, url_table.record,
                    url_table.method, url_table.token],
                list(sub)))
    email_table = Email.__table__()
    for sub in grouped_slice(emails, 200):
        cursor.execute(*email_table.insert(
                [email_table.create_uid, email_table.create_date,
                    email_table.record_activity, email_table.message_id,
                    email_table.sender, email_table.address,
                    email_table.recipient, email_table.subject,
                    email_table.message, email_table.state,
                    email_table.attempts, email_table.next_attempt],
                list(sub)))
    return errors


def _record_uuids(record_activity_ids):
    "The uuid of the marketing record of each record activity"
    pool = Pool()
    RecordActivity = pool.get('marketing.automation.record.activity')
    Record = pool.get('marketing.automation.record')
    record_activity = RecordActivity.__table__()
    record = Record.__table__()
    cursor = Transaction().connection.cursor()
    uuids = {}
    for sub in grouped_slice(
            record_activity_ids, backend.MAX_QUERY_PARAMS):
        cursor.execute(*record_activity.join(
                record, condition=record_activity.record == record.id
                ).select(
                record_activity.id, record.uuid,
                where=reduce_ids(record_activity.id, sub)))
        uuids.update(cursor)
    return uuids


def _marketing_parties(records):
    "The id of the marketing party of each record"
    by_model = defaultdict(list)
    for record in records:
        by_model[record.__class__].append(record.id)
    parties = {}
    with Transaction().set_context(_check_access=False):
        for Model, ids in by_model.items():
            for sub in grouped_slice(ids, BROWSE_SIZE):
                for values in Model.read(list(sub), ['marketing_party']):
                    parties[Model(values['id'])] = values['marketing_party']
    return parties


def _recipients(party_ids):
    """The name, email address and language code of each party

    The address is the first email contact mechanism of the party, as
    Party.contact_mechanism_get gives it."""
    pool = Pool()
    Party = pool.get('party.party')
    ContactMechanism = pool.get('party.contact_mechanism')
    PartyLang = pool.get('party.party.lang')
    Lang = pool.get('ir.lang')
    party = Party.__table__()
    mechanism = ContactMechanism.__table__()
    party_lang = PartyLang.__table__()
    lang = Lang.__table__()
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    default_language = config.get('database', 'language', default='en')

    recipients = {}
    for sub in grouped_slice(list(party_ids), backend.MAX_QUERY_PARAMS):
        sub = list(sub)
        cursor.execute(*party.join(party_lang, 'LEFT',
                condition=party_lang.party == party.id
                ).join(lang, 'LEFT',
                condition=party_lang.lang == lang.id
                ).select(
                party.id, party.name, lang.code,
                where=reduce_ids(party.id, sub),
                order_by=[party.id, party_lang.id]))
        for party_id, name, code in cursor:
            # a party may have a language per company: take the first
            if party_id not in recipients:
                recipients[party_id] = (
                    name, None, code or default_language)
        cursor.execute(*mechanism.select(
                mechanism.party, mechanism.name, mechanism.value,
                where=reduce_ids(mechanism.party, sub)
                & (mechanism.type == 'email')
                & (mechanism.active == Literal(True)),
                order_by=[mechanism.party,
                    mechanism.sequence.asc.nulls_first, mechanism.id]))
        for party_id, mechanism_name, value in cursor:
            name, address, code = recipients[party_id]
            if address is None and value:
                recipients[party_id] = (
                    mechanism_name or name, value.strip(), code)
    return recipients


def _address(formatted):
    return parseaddr(formatted)[1] if formatted else formatted


class Email(ModelSQL, ModelView):
    "An email of a record activity on its way to the mail server"
    __name__ = 'marketing.automation.email'

    record_activity = fields.Many2One(
        'marketing.automation.record.activity', "Record Activity",
        required=True, ondelete='CASCADE', readonly=True)
    message_id = fields.Char("Message-ID", readonly=True)
    sender = fields.Char("Sender", readonly=True)
    address = fields.Char("Address", readonly=True)
    recipient = fields.Char("Recipient", readonly=True)
    subject = fields.Char("Subject", readonly=True)
    message = fields.Binary("Message", readonly=True)
    state = fields.Selection([
            ('pending', "Pending"),
            ('sent', "Sent"),
            ('failed', "Failed"),
            ], "State", readonly=True, required=True)
    attempts = fields.Integer("Attempts", readonly=True)
    next_attempt = fields.DateTime("Next Attempt", readonly=True)
    error = fields.Text("Error", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('record_activity_unique', Unique(t, t.record_activity),
                'marketing_automation.msg_email_record_activity_unique'),
            ]
        cls._sql_indexes.add(Index(t,
                (t.state, Index.Equality(cardinality='low')),
                (t.next_attempt, Index.Range())))

    @classmethod
    def default_state(cls):
        return 'pending'

    @classmethod
    def default_attempts(cls):
        return 0

    @classmethod
    def of_record_activities(cls, record_activity_ids):
        "The ids of the emails of the record activities"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        ids = []
        for sub in grouped_slice(
                list(record_activity_ids), backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, where=reduce_ids(table.record_activity, sub)))
            ids.extend(i for i, in cursor)
        return ids

    @classmethod
    def ready(cls):
        "Queue the emails that wait for delivery or for their completion"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Activity = pool.get('marketing.automation.activity')
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        activity = Activity.__table__()
        cursor = Transaction().connection.cursor()
        now = datetime.datetime.now()
        cursor.execute(*table.join(record_activity,
                condition=table.record_activity == record_activity.id
                ).join(activity,
                condition=record_activity.activity == activity.id
                ).select(
                table.id,
                where=((table.state == 'pending')
                    & (table.next_attempt <= now)
                    & Activity.runnable(activity, now))
                | (table.state != 'pending'),
                order_by=[table.id.asc]))
        ids = [i for i, in cursor]
        queue(cls.__queue__.deliver, ids)

    @classmethod
    def deliver(cls, emails):
        """Send the pending emails and complete their record activities.

        The acceptance of each message is committed before the next one is
        sent."""
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        ids = list(map(int, emails))
        now = datetime.datetime.now()

        # Take the messages for the lease so no other run sends them.
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Record = pool.get('marketing.automation.record')
        Scenario = pool.get('marketing.automation.scenario')
        Activity = pool.get('marketing.automation.activity')
        record_activity = RecordActivity.__table__()
        record = Record.__table__()
        scenario = Scenario.__table__()
        activity = Activity.__table__()
        for_ = for_update(table)
        pending, blocked = [], []
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(record_activity,
                    condition=table.record_activity == record_activity.id
                    ).join(record,
                    condition=record_activity.record == record.id
                    ).join(scenario,
                    condition=record.scenario == scenario.id
                    ).join(activity,
                    condition=record_activity.activity == activity.id
                    ).select(
                    table.id, table.state, table.next_attempt,
                    record.blocked, scenario.state,
                    Activity.runnable(activity, now),
                    where=reduce_ids(table.id, sub),
                    for_=for_))
            for (email_id, state, next_attempt, record_blocked,
                    scenario_state, runnable) in cursor:
                if (state != 'pending' or next_attempt is None
                        or next_attempt > now or not runnable):
                    # a paused activity keeps its emails until it resumes
                    continue
                elif record_blocked:
                    blocked.append(email_id)
                elif scenario_state == 'running':
                    pending.append(email_id)
        cls._lease(pending)
        for sub in grouped_slice(blocked, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.state, table.error],
                    ['failed', gettext(
                            'marketing_automation.msg_email_blocked')],
                    where=reduce_ids(table.id, sub)))
        transaction.commit()

        if pending:
            with quick_commits(cursor):
                cls._send(pending)
        cls._complete(ids)

    @classmethod
    def _lease(cls, ids):
        """Keep other runs away from the emails of ids for a while

        The statements of the emails of a batch find them by their ids
        alone: the rows deleted once sent stay in the indexes until the table
        is vacuumed, and a condition on the state could make the database
        read them all."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        until = datetime.datetime.now() + LEASE
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.next_attempt], [until],
                    where=reduce_ids(table.id, sub)))

    @classmethod
    def _send(cls, ids):
        """Send the leased emails of ids

        A refusal that is not the recipient's (the server refuses the
        sender or the login) pauses the activities concerned and their
        emails wait for them, none is consumed."""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        server = None
        answered = set()
        activity_of = cls._activities(ids)
        faults, held = {}, []
        # a slow server may take longer than the lease: renew it half-way
        renewal = datetime.datetime.now() + LEASE / 2

        def postpone_unanswered(exception):
            # the server cannot be reached: no recipient's fault, so no
            # email gives up for it
            cls._postpone(
                [i for i in ids if i not in answered], _describe(exception),
                final=False)

        def hold(email_ids, error):
            for email_id in email_ids:
                faults.setdefault(activity_of[email_id], error)
                held.append(email_id)
                answered.add(email_id)

        try:
            for sub in grouped_slice(ids, 100):
                cursor.execute(*table.select(
                        table.id, table.sender, table.address, table.message,
                        table.attempts, table.state,
                        where=reduce_ids(table.id, sub),
                        order_by=[table.id.asc]))
                rows = [r[:-1] for r in cursor if r[-1] == 'pending']
                for email_id, sender, address, message, attempts in rows:
                    if activity_of[email_id] in faults:
                        hold([email_id], None)
                        continue
                    if datetime.datetime.now() >= renewal:
                        cls._lease([i for i in ids if i not in answered])
                        renewal = datetime.datetime.now() + LEASE / 2
                    if server is None:
                        try:
                            server = get_smtp_server(strict=True)
                        except smtplib.SMTPAuthenticationError as exception:
                            hold([i for i in ids if i not in answered],
                                gettext('marketing_automation'
                                    '.msg_activity_fault_smtp_login',
                                    error=_describe(exception)))
                            return
                        except (OSError, smtplib.SMTPException) as exception:
                            postpone_unanswered(exception)
                            return
                    try:
                        server.sendmail(sender, [address], bytes(message))
                    except smtplib.SMTPRecipientsRefused as exception:
                        code, text = next(iter(
                                exception.recipients.values()))
                        cls._refused(email_id, attempts, code, text)
                    except smtplib.SMTPSenderRefused as exception:
                        hold([email_id], gettext(
                                'marketing_automation'
                                '.msg_activity_fault_smtp_sender',
                                sender=sender,
                                activity=Activity(
                                    activity_of[email_id]).rec_name,
                                error=_describe(exception)))
                        continue
                    except smtplib.SMTPDataError as exception:
                        cls._refused(
                            email_id, attempts,
                            exception.smtp_code, exception.smtp_error)
                    except (OSError, smtplib.SMTPException) as exception:
                        # The connection is lost: the rest waits for later.
                        server = None
                        postpone_unanswered(exception)
                        return
                    else:
                        cursor.execute(*table.update(
                                [table.state, table.error], ['sent', Null],
                                where=table.id == email_id))
                    answered.add(email_id)
                    transaction.commit()
                    if server.sock is None:
                        # the server closed the connection with its answer
                        # (421): the next message opens a new one
                        server = None
        finally:
            if server is not None:
                try:
                    server.quit()
                except (OSError, smtplib.SMTPException):
                    pass
            if held:
                cls._hold(held)
                Activity.set_faults(
                    {a: e for a, e in faults.items() if e})
                transaction.commit()

    @classmethod
    def _activities(cls, ids):
        "The activity of each email of ids"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        activities = {}
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(record_activity,
                    condition=table.record_activity == record_activity.id
                    ).select(
                    table.id, record_activity.activity,
                    where=reduce_ids(table.id, sub)))
            activities.update(cursor)
        return activities

    @classmethod
    def _hold(cls, ids):
        """Let the pending emails of ids go as soon as their activity runs
        again, their attempts untouched: the failure was not theirs"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = datetime.datetime.now().replace(microsecond=0)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.next_attempt], [now],
                    where=reduce_ids(table.id, sub)))

    @classmethod
    def _refused(cls, email_id, attempts, code, text):
        if isinstance(text, bytes):
            text = text.decode('utf-8', 'replace')
        error = '%s %s' % (code, text)
        if 400 <= code < 500:
            cls._postpone([email_id], error)
        else:
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.state, table.error, table.attempts],
                    ['failed', error, attempts + 1],
                    where=table.id == email_id))

    @classmethod
    def _postpone(cls, ids, error, final=True):
        """Let the pending emails wait for a later attempt

        With final, an email that has had its attempts fails."""
        transaction = Transaction()
        table = cls.__table__()
        cursor = transaction.connection.cursor()
        now = datetime.datetime.now()
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.attempts, table.state,
                    where=reduce_ids(table.id, sub)))
            for email_id, attempts, state in cursor.fetchall():
                if state != 'pending':
                    continue
                attempts += 1
                if final and attempts >= MAX_ATTEMPTS:
                    values = ['failed', attempts, now, gettext(
                            'marketing_automation.msg_email_gave_up',
                            attempts=attempts, error=error)]
                else:
                    values = [
                        'pending', attempts, now + retry_delay(attempts),
                        error]
                cursor.execute(*table.update(
                        [table.state, table.attempts, table.next_attempt,
                            table.error],
                        values, where=table.id == email_id))
        transaction.commit()

    @classmethod
    def _complete(cls, ids):
        """Complete the record activities of the sent and failed emails and
        show the errors of the postponed ones"""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        finished = []
        postponed = defaultdict(list)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.record_activity, table.state, table.error,
                    where=reduce_ids(table.id, sub)))
            for email_id, record_activity, state, error in cursor:
                if state == 'pending':
                    if error:
                        postponed[error].append(record_activity)
                else:
                    finished.append((email_id, record_activity, state, error))
        record_activity_table = RecordActivity.__table__()
        for error, record_activities in postponed.items():
            for sub in grouped_slice(
                    record_activities, backend.MAX_QUERY_PARAMS):
                cursor.execute(*record_activity_table.update(
                        [record_activity_table.error], [error],
                        where=reduce_ids(record_activity_table.id, sub)))
        if finished:
            cls._log([f[0] for f in finished if f[2] == 'sent'])
            RecordActivity.complete(
                {f[1]: f[3] for f in finished},
                sent={f[1] for f in finished if f[2] == 'sent'})
            for sub in grouped_slice(
                    [f[0] for f in finished], backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.delete(
                        where=reduce_ids(table.id, sub)))
        transaction.commit()

    @classmethod
    def _log(cls, ids):
        "Log the sent emails in ir.email"
        pool = Pool()
        IrEmail = pool.get('ir.email')
        Address = pool.get('ir.email.address')
        RecordActivity = pool.get('marketing.automation.record.activity')
        Record = pool.get('marketing.automation.record')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        record = Record.__table__()
        ir_email = IrEmail.__table__()
        address = Address.__table__()
        now = datetime.datetime.now()
        returning = transaction.database.has_returning()
        columns = [ir_email.create_uid, ir_email.create_date,
            ir_email.recipients, ir_email.subject, ir_email.message_id,
            ir_email.resource, ir_email.marketing_automation_activity,
            ir_email.marketing_automation_record]
        address_columns = [address.create_uid, address.create_date,
            address.email, address.address]
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            query = table.join(record_activity,
                condition=table.record_activity == record_activity.id
                ).join(record,
                condition=record_activity.record == record.id
                ).select(
                    Literal(transaction.user), Literal(now),
                    table.recipient, table.subject, table.message_id,
                    record.record, record_activity.activity, record.id,
                    where=reduce_ids(table.id, sub))
            if returning:
                # ir.email has no index on the Message-ID: the new rows give
                # their ids rather than being searched among all the others
                cursor.execute(*ir_email.insert(
                        columns, query,
                        returning=[ir_email.id, ir_email.message_id]))
                logged = {m: i for i, m in cursor}
                cursor.execute(*table.select(
                        table.message_id, table.address,
                        where=reduce_ids(table.id, sub)))
                addresses = [
                    [transaction.user, now, logged[message_id], address_]
                    for message_id, address_ in cursor.fetchall()
                    if message_id in logged]
                if addresses:
                    cursor.execute(*address.insert(
                            address_columns, addresses))
            else:
                cursor.execute(*ir_email.insert(columns, query))
                # SQLite finds the new rows through the index of their record
                cursor.execute(*address.insert(
                        address_columns,
                        table.join(record_activity,
                            condition=(
                                table.record_activity == record_activity.id)
                            ).join(ir_email,
                            condition=(ir_email.marketing_automation_record
                                == record_activity.record)
                            & (ir_email.message_id == table.message_id)
                            ).select(
                            Literal(transaction.user), Literal(now),
                            ir_email.id, table.address,
                            where=reduce_ids(table.id, sub))))


def _describe(exception):
    if isinstance(exception, smtplib.SMTPResponseException):
        error = exception.smtp_error
        if isinstance(error, bytes):
            error = error.decode('utf-8', 'replace')
        return '%s %s' % (exception.smtp_code, error)
    if isinstance(exception, socket.timeout):
        return 'timeout'
    return '%s: %s' % (type(exception).__name__, exception)


class Secret(ModelSQL):
    "The key that signs the URLs of a database's emails"
    __name__ = 'marketing.automation.email.secret'

    secret = fields.Char("Secret", required=True, strip=False)

    @classmethod
    def __register__(cls, module):
        super().__register__(module)
        cls.get()

    @classmethod
    def get(cls):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.secret, order_by=[table.id.asc], limit=1))
        row = cursor.fetchone()
        if row:
            return row[0]
        secret = mailing.new_secret()
        cursor.execute(*table.insert(
                [table.create_uid, table.create_date, table.secret],
                [[0, datetime.datetime.now(), secret]]))
        return secret
