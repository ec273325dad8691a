# SPDX-License-Identifier: GPL-3.0-or-later
"""The send_email action: from due record activities to accepted messages.

The action plugs into the activity (``Activity.execute_send_email_batch``)
and into the record activity (``RecordActivity.in_progress``), and keeps its
messages in an outbox (``marketing.automation.email``).  An email goes
through two steps, each in its own transaction:

1. ``EmailBatch`` (run by the engine as the action of a batch of due
   entries) finds the recipients, renders their messages in the sandbox,
   creates their tracked links and stores each message in the outbox; the
   record activity stays waiting.
2. ``Email.deliver`` (``outbox.py``) hands the messages to the SMTP server
   over one connection and commits the acceptance of each message before
   sending the next, then reports the end of the record activities to the
   engine (``RecordActivity.complete``).

So a message is never sent for work that was rolled back, an entry is done
only once the server has accepted its message, and a process killed while
delivering sends at most the message in flight twice (with the same
Message-ID).  Transient failures leave the message waiting for a later run,
with a growing delay; permanent ones are written on the record activity; a
failure that is no recipient's pauses the activity (``ActivityFault``).
"""
import contextvars
import datetime
import email
import email.policy
import functools
import logging
import zoneinfo
from collections import defaultdict, namedtuple
from email.utils import parseaddr

from sql import Literal
from sql.aggregate import Sum
from sql.conditionals import Case
from sql.operators import Exists

from trytond import backend
from trytond.cache import Cache
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.report import Report
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import mailing, rendering, tools, urls
from .engine import Entry, EventKind, Outcome, marketing_parties
from .exceptions import ActivityFault, TemplateError
from .gates import Gate
from .overrides import current_run, overridden
from .tools import queue
from .web import EMAIL_CLICKED, EMAIL_OPENED, EMAIL_TRAP, RECORD_ACTIVITY

logger = logging.getLogger(__name__)

# How long a delivery of the outbox (outbox.py) may hold its messages before
# another run takes them; the tests shorten it here
LEASE = datetime.timedelta(minutes=10)
SEND_EMAIL = 'send_email'


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    _email_states = {
        'invisible': Eval('action') != SEND_EMAIL,
        }

    email_from = fields.Char(
        "From", translate=True, states=_email_states,
        help="Leave empty to use the configured sender.")
    email_title = fields.Char(
        "Email Title", translate=True,
        states={
            **_email_states,
            'required': Eval('action') == SEND_EMAIL,
            },
        help="A Genshi text template rendered with the record.")
    email_template = fields.Text(
        "Email Template", translate=True,
        states={
            **_email_states,
            'required': Eval('action') == SEND_EMAIL,
            },
        help="A Genshi HTML (or MJML) template rendered with the record.\n"
        "Write 'unsubscribe' as a link to let the recipient unsubscribe.")
    email_sent = fields.Function(
        fields.Integer(
            "Emails Sent", states=_email_states,
            help="How many emails the mail server accepted."),
        'get_email_statistics')
    email_opened = fields.Function(
        fields.Integer("Emails Opened", states=_email_states),
        'get_email_statistics')
    email_clicked = fields.Function(
        fields.Integer("Emails Clicked", states=_email_states),
        'get_email_statistics')
    email_open_rate = fields.Function(
        fields.Float(
            "Email Open Rate", digits=(1, 2), states=_email_states),
        'get_email_statistics')
    email_click_rate = fields.Function(
        fields.Float(
            "Email Click Rate", digits=(1, 2), states=_email_states),
        'get_email_statistics')
    email_click_through_rate = fields.Function(
        fields.Float(
            "Email Click-Through Rate", digits=(1, 2),
            states=_email_states),
        'get_email_statistics')
    email_open_rate_trend = fields.Function(
        fields.Char("Email Open Rate Trend", states=_email_states),
        'get_trend')
    email_click_rate_trend = fields.Function(
        fields.Char("Email Click Rate Trend", states=_email_states),
        'get_trend')
    email_click_through_rate_trend = fields.Function(
        fields.Char("Email Click-Through Rate Trend", states=_email_states),
        'get_trend')

    del _email_states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.action.selection.append((SEND_EMAIL, "Send Email"))
        cls.declare_event(EventKind(
                'email_opened', SEND_EMAIL, "Email Opened",
                "Email Not Opened"))
        cls.declare_event(EventKind(
                'email_clicked', SEND_EMAIL, "Email Clicked",
                "Email Not Clicked"))

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//page[@id="email"]', 'states', {
                    'invisible': Eval('action') != SEND_EMAIL,
                    }),
            ]

    def check_action_send_email(self, field_names=None):
        """Refuse the activity if its title or its template does not compile,
        if one of its links is refused, or if its sender is not an email
        address, in any language"""
        if field_names is not None and not field_names & {
                'action', 'email_from', 'email_title', 'email_template'}:
            return
        pool = Pool()
        Lang = pool.get('ir.lang')
        languages = [
            l.code for l in Lang.search([('translatable', '=', True)])] or [
            Transaction().context.get('language') or 'en']
        for code in languages:
            with Transaction().set_context(language=code):
                translated = self.__class__(self.id) if self.id else self
                title, template, sender = (
                    translated.email_title, translated.email_template,
                    translated.email_from)
            if sender:
                try:
                    mailing.check_sender(sender)
                except ValueError as exception:
                    raise TemplateError(gettext(
                            'marketing_automation'
                            '.msg_activity_invalid_email_from',
                            sender=sender,
                            activity=self.rec_name)) from exception
            for kind, source, message in [
                    ('title', title, 'msg_activity_invalid_email_title'),
                    ('body', template,
                        'msg_activity_invalid_email_template'),
                    ]:
                if not source:
                    continue
                try:
                    rendering.check_template(kind, source)
                except Exception as exception:
                    raise TemplateError(gettext(
                            'marketing_automation.' + message,
                            activity=self.rec_name,
                            exception=exception)) from exception

    @classmethod
    def _authored_fields(cls):
        return super()._authored_fields() | {
            'action', 'email_from', 'email_title', 'email_template'}

    def email_context(self, record):
        """The variables of the email templates for the marketing record
        (``marketing.automation.record``): ``record`` is its underlying
        record (the party, the sale)

        Override it to add variables.  Templates see them through the
        sandbox: records as read-only views of their fields, functions
        called with records in place of views, and plain values (text,
        numbers, dates, lists and dictionaries of them); anything else
        stops the activity."""
        return {
            'record': record.record,
            'format_date': Report.format_date,
            'format_datetime': _format_datetime,
            'format_timedelta': Report.format_timedelta,
            'format_currency': Report.format_currency,
            'format_number': Report.format_number,
            'datetime': datetime,
            }

    def email_sender(self):
        """The sender of the activity's emails, in the language of the
        transaction: its From, else the configured one"""
        return (self.email_from
            or config.get('marketing', 'email_from')
            or config.get('email', 'from'))

    def email_headers(self, record):
        """The headers added to the email to the record, as (name, value)
        pairs; override it to add some"""
        return []

    def _email_recipient(self, record):
        """The formatted address ('Name <address>') that the email to the
        underlying record goes to, or None: the first email contact
        mechanism of its marketing party (called for each record when a
        module overrides it, else read for all at once)"""
        party = record.marketing_party
        if party:
            name, address, _ = party_recipients({party.id}).get(
                party.id, (None, None, None))
            if address:
                return mailing.format_recipient(name, address)

    def _email(self, sender, to, subject, content):
        """The message (an email.message.EmailMessage) from sender to to
        with the subject and the HTML content

        The engine calls it for each email when a module overrides it,
        with what it would write itself (the plain-text part, the
        Message-ID, the unsubscribe headers) given to this default."""
        parts = _EMAIL_PARTS.get({})
        message = mailing.build_message(
            sender, to, subject, content, parts.get('text'),
            message_id=parts.get('message_id') or mailing.message_id(
                mailing.new_token(), urls.email_domain()),
            unsubscribe=parts.get('unsubscribe'),
            language=parts.get('language'),
            headers=parts.get('headers', ()))
        return email.message_from_bytes(message, policy=email.policy.SMTP)

    def execute_send_email_batch(self, entries, records):
        "Store the emails of the entries in the outbox and queue them"
        pool = Pool()
        Email = pool.get('marketing.automation.email')
        errors = EmailBatch(self, entries, records).store()
        later = {e.id for e in entries} - set(errors)
        queue(Email.__queue__.deliver, Email.of_record_activities(later))
        return Outcome(errors, later)

    def execute_send_email(self, record_activity, **kwargs):
        """Store the email of one record activity in the outbox, as Tryton's
        own module sends it: the engine calls it for each entry when a
        module overrides it (or execute)"""
        pool = Pool()
        Email = pool.get('marketing.automation.email')
        run = current_run()
        record = record_activity.record
        entry = Entry(record_activity.id, record.id, str(record.record))
        errors = EmailBatch(
            self, [entry], {entry.id: record.record}).store()
        run.errors.update(errors)
        if entry.id not in errors:
            run.later.add(entry.id)
            run.queue(
                'marketing_automation_deliver',
                lambda ids: queue(
                    Email.__queue__.deliver, Email.of_record_activities(ids)),
                [entry.id])

    @classmethod
    def get_email_statistics(cls, activities, names):
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()

        counts = {a.id: (0, 0, 0) for a in activities}
        sent = record_activity.email_sent == Literal(True)
        for sub in grouped_slice(activities, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record_activity.select(
                    record_activity.activity,
                    Sum(Case((sent, 1), else_=0)),
                    # A click proves an open, even when the open was not
                    # reported.
                    Sum(Case((sent & (record_activity.email_opened
                                    | record_activity.email_clicked), 1),
                            else_=0)),
                    Sum(Case((sent & record_activity.email_clicked, 1),
                            else_=0)),
                    where=reduce_ids(
                        record_activity.activity, [a.id for a in sub])
                    & (record_activity.state == 'done'),
                    group_by=[record_activity.activity]))
            for activity_id, *emails in cursor:
                counts[activity_id] = tuple(e or 0 for e in emails)

        result = {n: {} for n in names}
        for activity_id, (sent, opened, clicked) in counts.items():
            values = {
                'email_sent': sent,
                'email_opened': opened,
                'email_clicked': clicked,
                # Rates are over the emails that reached the server: an
                # entry whose email was not sent can be neither opened nor
                # clicked.
                'email_open_rate': tools.round_rate(opened, sent),
                'email_click_rate': tools.round_rate(clicked, sent),
                'email_click_through_rate': tools.round_rate(clicked, opened),
                }
            for name in names:
                result[name][activity_id] = values[name]
        return result


@functools.cache
def _time_zones():
    return zoneinfo.available_timezones()


def _format_datetime(value, lang=None, format=None, timezone=None):
    """Report.format_datetime, taking for timezone only the name of a time
    zone: dateutil opens a path given as a name, which would tell a
    template whether a file exists"""
    if isinstance(timezone, str) and timezone not in _time_zones():
        raise ValueError(f"Unknown time zone: {timezone!r}")
    return Report.format_datetime(
        value, lang=lang, format=format, timezone=timezone)


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    _email_states = {
        'invisible': Eval('activity_action') != SEND_EMAIL,
        }

    email_opened = fields.Boolean(
        "Email Opened", readonly=True, states=_email_states)
    email_clicked = fields.Boolean(
        "Email Clicked", readonly=True, states=_email_states)
    email_sent = fields.Boolean(
        "Email Sent", readonly=True, states=_email_states,
        help="Whether the mail server accepted the email.")

    del _email_states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        not_done_email = (
            (Eval('state') != 'done')
            | (Eval('activity_action') != SEND_EMAIL))
        cls._buttons.update({
                'on_email_opened': {
                    'invisible': not_done_email | Eval('email_opened', False),
                    'depends': ['state', 'activity_action', 'email_opened'],
                    },
                'on_email_clicked': {
                    'invisible': not_done_email | Eval('email_clicked', False),
                    'depends': [
                        'state', 'activity_action', 'email_clicked'],
                    },
                })

    @classmethod
    def __register__(cls, module):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        migrate_sent = (
            backend.TableHandler.table_exist(cls._table)
            and not cls.__table_handler__(module).column_exist('email_sent'))

        super().__register__(module)

        # Databases of the other module know no delivery status: their done
        # email entries were sent as far as anybody can tell.
        if migrate_sent:
            table = cls.__table__()
            activity = Activity.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.email_sent], [True],
                    where=(table.state == 'done')
                    & table.activity.in_(activity.select(
                            activity.id,
                            where=activity.action == SEND_EMAIL))))

    @classmethod
    def default_email_opened(cls):
        return False

    @classmethod
    def default_email_clicked(cls):
        return False

    @classmethod
    def default_email_sent(cls):
        return False

    @classmethod
    def _new_values(cls):
        values = super()._new_values()
        values.update(email_opened=False, email_clicked=False,
            email_sent=False)
        return values

    @classmethod
    def in_progress(cls, table):
        # an email waits in the outbox
        pool = Pool()
        Email = pool.get('marketing.automation.email')
        email = Email.__table__()
        return super().in_progress(table) | Exists(email.select(
                Literal(1), where=email.record_activity == table.id))

    @classmethod
    def gates(cls):
        return {**super().gates(), OutboxGate.name: OutboxGate}

    @classmethod
    @ModelView.button
    def on_email_opened(cls, record_activities):
        """Flag the emails of the record activities opened and make the
        children waiting for it due (through _on_event for each when a
        module overrides it)"""
        cls._on_events(record_activities, ['email_opened'])

    @classmethod
    @ModelView.button
    def on_email_clicked(cls, record_activities):
        "Flag the emails clicked, and opened, as on_email_opened"
        # A click reveals an open that the mail client did not report.
        cls._on_events(record_activities, ['email_opened', 'email_clicked'])

    @classmethod
    def _on_events(cls, record_activities, events):
        if not overridden(cls, '_on_event'):
            cls.on_events(record_activities, events)
            return
        record_activities = cls.browse(record_activities)
        for record_activity in record_activities:
            for event in events:
                if not getattr(record_activity, event):
                    record_activity._on_event(event)
        cls.save(record_activities)

    def _on_event(self, event):
        """Flag the event on the record activity and make its children
        waiting for it due, as Tryton's own module does"""
        self.on_events([self], [event])


# what the engine gives Activity._email besides its arguments, by name
_EMAIL_PARTS = contextvars.ContextVar(
    'marketing_automation_email_parts', default=None)


class OutboxGate(Gate):
    """The outbox: an entry whose email is on its way is not due (see
    RecordActivity.in_progress); before each run, the emails that wait for
    another attempt are queued"""
    name = 'outbox'

    @classmethod
    def periodic(cls, RecordActivity, now):
        Pool().get('marketing.automation.email').ready()

    def applies(self):
        return False


Recipient = namedtuple(
    'Recipient', ['entry', 'record', 'uuid', 'name', 'address', 'language'])
Recipient.__doc__ = """An entry of the batch with an email address: the
underlying record, the uuid of its marketing record, the name and address
of its marketing party and the code of its language"""


class EmailBatch:
    """The emails of a batch of due entries of an activity, made in order:

    1. ``recipients``: who receives each entry's email, in which language;
    2. for each language, the activity's templates compiled and its sender
       checked (``compiled``, ``sender``), a fault of the activity else;
    3. ``message``: each recipient's email rendered in the sandbox, its
       links made tracked links, built as MIME;
    4. ``store``: the tracked links and the messages inserted together.

    The errors of one recipient are theirs; the template failing for every
    recipient is the activity's (ActivityFault)."""

    def __init__(self, activity, entries, records):
        self.activity = activity
        self.entries = entries
        self.records = records
        self.errors = {}
        self.links = []
        self.emails = []
        self.base = urls.base()
        self.database = urls.database()
        self.domain = urls.email_domain()
        self.secret = Pool().get('marketing.automation.email.secret').get()
        # whole seconds: PostgreSQL rounds the microseconds of a
        # timestamp(0), which could put the first attempt after the delivery
        # that follows
        self.now = datetime.datetime.now().replace(microsecond=0)
        self.renderer = rendering.Renderer(activity)
        self.max_size = rendering.max_size()

    def recipients(self):
        """The recipients of the entries by language; an entry whose party
        has no address gets its error"""
        Record = Pool().get('marketing.automation.record')
        uuids = _record_uuids([e.id for e in self.entries])
        parties = marketing_parties(self.records.values())
        contacts = party_recipients(set(filter(None, parties.values())))
        by_recipient = overridden(self.activity, '_email_recipient')
        by_language_of = overridden(Record, 'language')
        by_language = defaultdict(list)
        for entry in self.entries:
            record = self.records[entry.id]
            name, address, language = contacts.get(
                parties.get(record), (None, None, None))
            if by_recipient:
                name, address = parseaddr(
                    self.activity._email_recipient(record) or '')
            if by_language_of and entry.record is not None:
                language = Record(entry.record, record=record).language
                language = language or config.get(
                    'database', 'language', default='en')
            if not address:
                self.errors[entry.id] = gettext(
                    'marketing_automation.msg_email_no_address',
                    party=name or '')
                continue
            by_language[language].append(Recipient(
                    entry, record, uuids[entry.id], name, address, language))
        return by_language

    def store(self):
        """Make the emails of the entries and insert them in the outbox

        Returns the errors of the entries without an email."""
        Activity = Pool().get('marketing.automation.activity')
        transaction = Transaction()
        for language, recipients in self.recipients().items():
            with transaction.set_context(language=language):
                translated = Activity(self.activity.id)
                sender = _checked_sender(translated)
                for recipient, rendered in self.renderer.render(
                        translated, recipients, language):
                    self.message(translated, sender, recipient, rendered)
        self.renderer.check()
        self._insert()
        return self.errors

    def message(self, activity, sender, recipient, rendered):
        """Make the email of the recipient from its Rendered templates, or
        keep the error of its entry"""
        entry_id = recipient.entry.id
        first_link = len(self.links)
        try:
            if isinstance(rendered, Exception):
                raise rendered
            to = mailing.format_recipient(recipient.name, recipient.address)
            urls_ = self._urls(entry_id, recipient.uuid, rendered.links)
            subject = self._subject(rendered.subject)
            message_id = self._message_id(recipient)
            message = self._build(
                activity, sender, to, subject,
                mailing.fill(rendered.html, urls_),
                text=mailing.fill(rendered.text, urls_, quote=False),
                message_id=message_id,
                unsubscribe=self._unsubscribe_url(recipient),
                language=recipient.language,
                headers=activity.email_headers(recipient.record))
            self._check_size(message, rendered)
        except mailing.TooHeavy as exception:
            # the templates made it so: the renderer counts it as a failure
            # of their rendering
            self.renderer.failed(exception)
            self.errors[entry_id] = gettext(
                'marketing_automation.msg_email_render_error',
                exception=exception)
            del self.links[first_link:]
            return
        except (mailing.RenderError, ValueError) as exception:
            self.errors[entry_id] = gettext(
                'marketing_automation.msg_email_render_error',
                exception=exception)
            del self.links[first_link:]
            return
        self._keep(entry_id, message_id, sender, to, subject, message)

    def _build(self, activity, sender, to, subject, html, **parts):
        """The bytes of the message; through Activity._email when a module
        overrides it"""
        if not overridden(activity, '_email'):
            return mailing.build_message(
                sender, to, subject, html, parts.pop('text'), **parts)
        token = _EMAIL_PARTS.set(parts)
        try:
            message = activity._email(sender, to, subject, html)
        finally:
            _EMAIL_PARTS.reset(token)
        return message.as_bytes(policy=email.policy.SMTP)

    def _check_size(self, message, rendered):
        "Raise TooHeavy when the message weighs more than an email may"
        if self.max_size and len(message) > self.max_size:
            heaviest = ''
            if rendered.heaviest:
                description, size = rendered.heaviest
                heaviest = (
                    f": {description} makes {mailing.weight(size)} of it")
            raise mailing.TooHeavy(
                f"the email weighs {mailing.weight(len(message))}, more "
                f"than the {mailing.weight(self.max_size)} an email may"
                f"{heaviest}")

    # The trial of a marketer (marketing_automation_preview.py) overrides
    # these: a test email has its own subject, Message-ID and unsubscribe
    # link, and stays out of the outbox.

    def _subject(self, subject):
        "The subject of the email whose title rendered as subject"
        return subject

    def _message_id(self, recipient):
        return mailing.message_id(
            '%s.%s' % (recipient.uuid, self.activity.id), self.domain)

    def _unsubscribe_url(self, recipient):
        "The one-click unsubscribe URL of the List-Unsubscribe header"
        return urls.unsubscribe_url(self.base, self.database, recipient.uuid)

    def _keep(self, entry_id, message_id, sender, to, subject, message):
        "Keep the message of the entry for the outbox"
        self.emails.append([
                Transaction().user, self.now, entry_id, message_id,
                email_address(sender), email_address(to), to, subject,
                message, 'pending', 0, self.now])

    def _urls(self, entry_id, uuid, links):
        """The URLs of the links of a rendering, in order: the unsubscribe
        links signed, the others tracked links to insert"""
        reference = '%s,%s' % (RECORD_ACTIVITY, entry_id)
        user = Transaction().user
        result = []
        for link in links:
            if link.kind == mailing.UNSUBSCRIBE:
                result.append(urls.unsubscribe_url(
                        self.base, self.database, uuid, link.url,
                        self.secret))
                continue
            token = mailing.new_token()
            if link.kind == mailing.OPEN:
                redirect, method = urls.empty_gif_url(self.base), EMAIL_OPENED
            elif link.kind == mailing.TRAP:
                redirect, method = urls.empty_page_url(self.base), EMAIL_TRAP
            else:
                redirect, method = link.url, EMAIL_CLICKED
            self.links.append(
                [user, self.now, redirect, reference, method, token])
            result.append(
                urls.tracked_link_url(self.base, self.database, token))
        return result

    def _insert(self):
        pool = Pool()
        ShortenedURL = pool.get('web.shortened_url')
        Email = pool.get('marketing.automation.email')
        cursor = Transaction().connection.cursor()
        url_table = ShortenedURL.__table__()
        for sub in grouped_slice(self.links, 500):
            cursor.execute(*url_table.insert(
                    [url_table.create_uid, url_table.create_date,
                        url_table.redirect_url, url_table.record,
                        url_table.method, url_table.token],
                    list(sub)))
        email_table = Email.__table__()
        for sub in grouped_slice(self.emails, 200):
            cursor.execute(*email_table.insert(
                    [email_table.create_uid, email_table.create_date,
                        email_table.record_activity, email_table.message_id,
                        email_table.sender, email_table.address,
                        email_table.recipient, email_table.subject,
                        email_table.message, email_table.state,
                        email_table.attempts, email_table.next_attempt],
                    list(sub)))


def _checked_sender(activity):
    "The sender of the activity's emails, or ActivityFault"
    sender = activity.email_sender()
    try:
        mailing.check_sender(sender)
    except ValueError as exception:
        raise ActivityFault(gettext(
                'marketing_automation.msg_activity_invalid_email_from',
                sender=sender, activity=activity.rec_name)) from exception
    return sender


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


def party_recipients(party_ids):
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


def email_address(formatted):
    "The bare address of formatted ('Name <address>' or an address)"
    return parseaddr(formatted)[1] if formatted else formatted


class Secret(ModelSQL):
    "The key that signs the URLs of a database's emails"
    __name__ = 'marketing.automation.email.secret'

    secret = fields.Char("Secret", required=True, strip=False)
    # written once, when the module is activated, and never changed: every
    # click reads it
    _secret_cache = Cache(
        'marketing.automation.email.secret.get', context=False)

    @classmethod
    def __register__(cls, module):
        super().__register__(module)
        cls.get()

    @classmethod
    def get(cls):
        secret = cls._secret_cache.get(None)
        if secret is not None:
            return secret
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.secret, order_by=[table.id.asc], limit=1))
        row = cursor.fetchone()
        if row:
            # only a committed secret: a new one may yet be rolled back
            cls._secret_cache.set(None, row[0])
            return row[0]
        secret = mailing.new_secret()
        cursor.execute(*table.insert(
                [table.create_uid, table.create_date, table.secret],
                [[0, datetime.datetime.now(), secret]]))
        return secret


class Unsubscribe(Report):
    "The page of a recipient who unsubscribes, in their language"
    __name__ = 'marketing.automation.unsubscribe'

    @classmethod
    def get_context(cls, records, header, data):
        pool = Pool()
        Lang = pool.get('ir.lang')
        context = super().get_context(records, header, data)
        lang = Lang.get()
        # a right-to-left language (Persian) reads its page from the right
        context['page_language'] = lang.code.replace('_', '-')
        context['page_direction'] = lang.direction or 'ltr'
        return context
