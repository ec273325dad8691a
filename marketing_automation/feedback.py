# SPDX-License-Identifier: GPL-3.0-or-later
"""What the mail world says back about the emails sent, free of the database.

Each marketing email leaves with an envelope sender (the Return-Path, SMTP's
``MAIL FROM``) that names its record activity without revealing it (VERP)::

    token = make_token(secret, record_activity.id)
    envelope_sender = verp_address('bounce@shop.example.com', token)
    # 'bounce+<token>@shop.example.com'

so that whatever comes back to that address says which entry it is about.
``secret`` is the database's key (the email secret): a token is an id and an
HMAC of it (``mailing.sign``), in lowercase letters and digits only, since
some mail servers lowercase local parts.
``read_token(secret, token)`` gives the id back, or None for a token that
this database did not make (forged, mangled, or of another database).

A message received on the bounce address is read with::

    feedback = classify(raw, bounce_address='bounce@shop.example.com')

which returns a ``Feedback``, never raising whatever the bytes, with:

- ``kind``: ``HARD_BOUNCE``, ``SOFT_BOUNCE``, ``DELAY``, ``COMPLAINT``,
  ``AUTO_REPLY``, ``REPLY`` or ``OTHER`` (see below);
- ``status``: the enhanced status code of a bounce (``'5.1.1'``) or None;
- ``diagnostic``: the remote server's words about it, or None;
- ``recipients``: the addresses that failed or complained, lowercased with
  an IDNA (ASCII) domain, as a suppression list compares them;
- ``message_ids``: the Message-IDs (``'<…>'``) of the email the message is
  about, as found in In-Reply-To, References or the returned headers of a
  report, the most telling first;
- ``addresses``: the addresses where a VERP token may be (the recipients
  of this message, the Return-Path of the returned email, the fields of
  the report), normalised like ``recipients``;
- ``tokens``: the VERP tokens of bounce_address found in ``addresses``,
  not verified yet (empty without bounce_address);
- ``feedback_type``: the Feedback-Type of an ARF report, lowercased;
- ``sender``: the From address of the message (the person who replied);
- ``subject``: its decoded subject;
- ``evidence``: what the kind rests on (``'delivery-status'``,
  ``'feedback-report'``, ``'flufl.bounce'``, ``'auto-submitted'``,
  ``'in-reply-to'``, ``'token'``…), for the logs and the curious.

The caller finds the entry by the first token that verifies, else by the
Message-IDs it sent::

    ids = (read_token(secret, token) for token in feedback.tokens)
    record_activity_id = next(filter(None, ids), None)

A message that names no entry this way has no effect, whatever its kind:
anyone can write "Action: failed" in a message to the bounce address.

The kinds, tried in this order:

1. a delivery status report (RFC 3464, ``multipart/report`` with a
   ``message/delivery-status`` part): ``Action: failed`` with a 5.x.x status
   is a ``HARD_BOUNCE``; with a 4.x.x status or a full mailbox (x.2.2 or
   its usual words) a ``SOFT_BOUNCE``; ``Action: delayed`` alone is a
   ``DELAY``, a warning that the server is still trying and not a failure;
   a report of delivery only is ``OTHER``;
2. a feedback report (ARF, RFC 5965): ``Feedback-Type: abuse`` or ``fraud``
   is a ``COMPLAINT``, any other type (``not-spam``…) is ``OTHER``; so are
   the complaints of Outlook.com's JMRP and the JSON notifications of
   Amazon SES (which also give bounces and delays);
3. a message of a mail system in another format (Exim, qmail, old
   Postfix, Sendmail, Exchange, Yahoo…): the sender is a mailer daemon or
   a postmaster, or the message has X-Failed-Recipients; the failed
   addresses are those ``flufl.bounce`` (GNU Mailman's detector) finds,
   the status the first code of the notification's text; without a status,
   its failures are hard and its warnings delays.  Exim marks its bounces
   ``Auto-Submitted: auto-replied``, hence this step before the next;
4. an ``AUTO_REPLY`` (RFC 3834 ``Auto-Submitted`` other than ``no``,
   X-Autoreply, X-Autorespond, ``Precedence: auto_reply``,
   X-MS-Exchange-Inbox-Rules-Loop…; or, for a message that refers to an
   email, ``Precedence: bulk``/``junk``, X-Auto-Response-Suppress or an
   out-of-office subject in one of several languages);
5. a ``REPLY``: any other message that refers to an email (In-Reply-To,
   References) or reached a VERP address;
6. anything else is ``OTHER``: spam to the bounce address, a forwarded
   report, malformed MIME.

Without ``flufl.bounce`` installed (the module's ``feedback`` extra), the
formats of step 3 are still recognised as a mail system's, and their kind
and status read from the text, but their failed addresses are not.

Limits, so that a message costs milliseconds whatever it holds: only the
first ``MAX_BYTES`` of a message are read (a report comes before the email
it returns, and a reply's headers before its body); at most ``MAX_PARTS``
MIME parts, ``MAX_DEPTH`` levels deep, are looked at, and a forwarded
message is never looked into; a header is read up to ``MAX_HEADER``
characters, a text up to ``MAX_TEXT``; a diagnostic is cut at
``MAX_DIAGNOSTIC`` characters and at most ``MAX_ADDRESSES`` addresses and
Message-IDs are kept.
"""

import base64
import binascii
import json
import re
from collections import namedtuple
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from . import mailing

# GNU Mailman's detector of bounce formats, the module's "feedback" extra
try:
    import flufl.bounce as flufl_bounce
except ImportError:
    flufl_bounce = None

__all__ = [
    'HARD_BOUNCE', 'SOFT_BOUNCE', 'DELAY', 'COMPLAINT', 'AUTO_REPLY',
    'REPLY', 'OTHER', 'KINDS', 'Feedback', 'classify',
    'make_token', 'read_token', 'verp_address', 'find_tokens',
    'normalize_address',
    'MAX_BYTES', 'MAX_PARTS', 'MAX_DEPTH', 'MAX_HEADER', 'MAX_TEXT',
    'MAX_DIAGNOSTIC', 'MAX_ADDRESSES']

HARD_BOUNCE = 'hard_bounce'
SOFT_BOUNCE = 'soft_bounce'
DELAY = 'delay'
COMPLAINT = 'complaint'
AUTO_REPLY = 'auto_reply'
REPLY = 'reply'
OTHER = 'other'
KINDS = (HARD_BOUNCE, SOFT_BOUNCE, DELAY, COMPLAINT, AUTO_REPLY, REPLY, OTHER)

MAX_BYTES = 128 * 1024
MAX_PARTS = 64
MAX_DEPTH = 8
MAX_HEADER = 8 * 1024
MAX_TEXT = 32 * 1024
MAX_DIAGNOSTIC = 500
MAX_ADDRESSES = 32

Feedback = namedtuple('Feedback', [
        'kind', 'status', 'diagnostic', 'recipients', 'message_ids',
        'addresses', 'tokens', 'feedback_type', 'sender', 'subject',
        'evidence'],
    defaults=[None, None, (), (), (), (), None, None, None, None])
Feedback.__doc__ = "What a message received on the bounce address says"


# VERP tokens

_VERP = 'verp'
# the id in base 36, then the 128 bits of the signature in base 32
_SIGNATURE_LENGTH = 26
_TOKEN = re.compile(r'([1-9a-z][0-9a-z]{0,12})([a-z2-7]{26})')
_MAX_ID = 2 ** 63 - 1
_TOKEN_CHARACTERS = re.compile(r'[0-9a-z]+')
_DOT_ATOM = re.compile(
    r"[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+)*")
# RFC 5321: the local part of an address is at most 64 octets
_MAX_LOCAL_PART = 64


def _base36(number):
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append('0123456789abcdefghijklmnopqrstuvwxyz'[digit])
    return ''.join(reversed(digits))


def _signature(secret, record_activity_id):
    signature = mailing.sign(secret, _VERP, str(record_activity_id))
    digest = base64.urlsafe_b64decode(signature + '==')
    return base64.b32encode(digest).decode('ascii').rstrip('=').lower()


def make_token(secret, record_activity_id):
    """Return the VERP token of the record activity id, signed with secret:
    at most 39 lowercase letters and digits"""
    if (not isinstance(record_activity_id, int)
            or isinstance(record_activity_id, bool)
            or not 0 < record_activity_id <= _MAX_ID):
        raise ValueError(f"Invalid record activity id: {record_activity_id!r}")
    return _base36(record_activity_id) + _signature(
        secret, record_activity_id)


def read_token(secret, token):
    """Return the record activity id of a token of make_token signed with
    secret, or None; case is ignored and nothing raises"""
    if not isinstance(token, str) or len(token) > 64:
        return None
    match = _TOKEN.fullmatch(token.lower())
    if not match:
        return None
    record_activity_id = int(match.group(1), 36)
    if record_activity_id > _MAX_ID:
        return None
    try:
        digest = base64.b32decode(match.group(2).upper() + '======')
    except binascii.Error:
        return None
    # the last character carries two bits that do not count: refuse the
    # other spellings of a token
    if base64.b32encode(digest).decode('ascii').rstrip('=').lower() != (
            match.group(2)):
        return None
    signature = base64.urlsafe_b64encode(digest).decode('ascii').rstrip('=')
    if not mailing.verify(secret, signature, _VERP, str(record_activity_id)):
        return None
    return record_activity_id


def _split_bounce_address(bounce_address):
    "Return the local part and the IDNA domain of the bounce address"
    if not isinstance(bounce_address, str):
        raise ValueError(f"Invalid bounce address: {bounce_address!r}")
    local, at, domain = bounce_address.strip().rpartition('@')
    if not at or not _DOT_ATOM.fullmatch(local) or '+' in local:
        raise ValueError(
            f"Invalid bounce address: {bounce_address!r} "
            "(an address without '+' is expected)")
    try:
        domain = domain.rstrip('.').encode('idna').decode('ascii').lower()
    except UnicodeError as exception:
        raise ValueError(
            f"Invalid bounce address: {bounce_address!r}") from exception
    if not domain:
        raise ValueError(f"Invalid bounce address: {bounce_address!r}")
    return local, domain


def verp_address(bounce_address, token):
    """Return bounce_address with token after a '+' in its local part:
    'bounce@shop.example.com' gives 'bounce+TOKEN@shop.example.com'

    Raise ValueError when bounce_address is not an address without '+',
    token not lowercase letters and digits, or the local part too long."""
    local, domain = _split_bounce_address(bounce_address)
    if not isinstance(token, str) or not _TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError(f"Invalid VERP token: {token!r}")
    local = f'{local}+{token}'
    if len(local) > _MAX_LOCAL_PART:
        raise ValueError(
            f"The local part of {local}@{domain} is longer than "
            f"{_MAX_LOCAL_PART} characters.")
    return f'{local}@{domain}'


def _domain_key(domain):
    "The domain as compared: lowercase, IDNA, without the final dot"
    domain = domain.strip().rstrip('.').lower()
    try:
        return domain.encode('idna').decode('ascii')
    except UnicodeError:
        return domain


def _unquote(local):
    if len(local) >= 2 and local[0] == local[-1] == '"':
        return re.sub(r'\\(.)', r'\1', local[1:-1])
    return local


def normalize_address(address):
    """Return the addr-spec address lowercased with an IDNA domain, or None
    when it is not an address"""
    if not isinstance(address, str):
        return None
    address = address.strip().strip('<>').strip()
    local, at, domain = address.rpartition('@')
    local = _unquote(local.strip())
    domain = _domain_key(domain)
    if (not at or not local or not domain or len(address) > 320
            or any(c.isspace() or not c.isprintable()
                for c in local + domain)
            or '@' in domain):
        return None
    return f'{local.lower()}@{domain}'


# An address type before an address: 'rfc822; a@b', 'utf-8; a@b'
_ADDRESS_TYPE = re.compile(r'\s*[A-Za-z][\w.-]*\s*;\s*')
# A forwarder's Sender Rewriting Scheme keeps the address as its last two
# fields: SRS0=hash=tt=domain=local
_SRS = re.compile(r'srs[01][=+-].*=([^=@]+)=([^=@]+)')


def _addresses(value):
    "Return the normalised addresses of a header or report field value"
    if not value:
        return []
    value = value[:MAX_HEADER]
    match = _ADDRESS_TYPE.match(value)
    if match and '@' not in match.group(0):
        value = value[match.end():]
    addresses = []
    for _, address in getaddresses([value]):
        address = normalize_address(address)
        if address and address not in addresses:
            addresses.append(address)
    return addresses


def find_tokens(bounce_address, addresses):
    """Return the tokens that addresses (header values, addresses with or
    without names) give to bounce_address, in order and each once

    The local parts and domains are compared without case, quoting and
    IDNA encoding, and an address rewritten by a forwarder (SRS) is read
    as the address it wraps.  The tokens are not verified: see
    read_token."""
    local, domain = _split_bounce_address(bounce_address)
    prefix = local.lower() + '+'
    tokens = []
    for value in addresses:
        if not isinstance(value, str):
            continue
        for address in _addresses(value):
            address_local, _, address_domain = address.rpartition('@')
            srs = _SRS.fullmatch(address_local)
            if srs:
                address_domain, address_local = srs.groups()
                address_domain = _domain_key(address_domain)
            token = address_local[len(prefix):]
            if (address_domain == domain
                    and address_local.startswith(prefix)
                    and _TOKEN_CHARACTERS.fullmatch(token)
                    and token not in tokens):
                tokens.append(token)
    return tuple(tokens)


# Reading messages

def _decode(value):
    "Return the text of a header value, its encoded words decoded"
    if value is None:
        return ''
    if isinstance(value, str) and '=?' not in value and value.isascii():
        return value[:MAX_HEADER]
    try:
        chunks = decode_header(value)
    except Exception:
        return str(value)[:MAX_HEADER]
    text = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        text.append(_bytes_text(chunk, charset))
    return ''.join(text)[:MAX_HEADER]


def _bytes_text(data, charset):
    "Return data decoded with charset, else UTF-8, else Latin-1"
    charset = (charset or 'utf-8').lower()
    if charset in {'unknown-8bit', 'us-ascii', 'ascii'}:
        charset = 'utf-8'
    try:
        return data.decode(charset)
    except (LookupError, UnicodeError):
        pass
    try:
        return data.decode('utf-8')
    except UnicodeError:
        return data.decode('latin-1')


def _header(message, name):
    "The decoded value of the first header name of message, or ''"
    try:
        return _decode(message.get(name))
    except Exception:
        return ''


def _headers(message, name):
    "The decoded values of the headers name of message"
    try:
        values = message.get_all(name) or []
    except Exception:
        return []
    return [_decode(value) for value in values[:MAX_ADDRESSES]]


def _parts(message):
    """Yield the parts of message, message first, without looking into the
    messages it carries, MAX_PARTS at most"""
    stack = [(message, 0)]
    count = 0
    while stack and count < MAX_PARTS:
        part, depth = stack.pop()
        count += 1
        yield part
        if (part.get_content_maintype() == 'multipart'
                and depth < MAX_DEPTH):
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(
                    (child, depth + 1) for child in reversed(payload)
                    if isinstance(child, Message))


def _text(part):
    "The text of a leaf part, decoded, MAX_TEXT characters at most"
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ''
    if not isinstance(payload, bytes):
        return ''
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _bytes_text(payload[:MAX_TEXT * 4], charset)[:MAX_TEXT]


def _embedded(part):
    "The message that a message/* part carries, or None"
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(
            payload[0], Message):
        return payload[0]
    return None


def _returned_headers(message):
    """Return the headers of the email returned by a report (a Message),
    or None"""
    for part in _parts(message):
        content_type = part.get_content_type()
        if content_type in {'message/rfc822', 'message/global'}:
            embedded = _embedded(part)
            if embedded is not None:
                return embedded
        elif content_type in {
                'text/rfc822-headers', 'message/rfc822-headers',
                'message/global-headers'}:
            # a message/* part is parsed as a message, a text/* one is not
            return _embedded(part) or HeaderParser().parsestr(
                _text(part), headersonly=True)
    return None


_MESSAGE_ID = re.compile(r'<([^<>\s]{1,250})>')
_BARE_MESSAGE_ID = re.compile(r'[^<>\s@]{1,200}@[^<>\s@]{1,200}')


def _message_ids(value):
    "The Message-IDs ('<…>') of a header value"
    ids = [f'<{match}>' for match in _MESSAGE_ID.findall(value)]
    if not ids:
        # some clients leave out the angle brackets
        ids = [f'<{match}>' for match in _BARE_MESSAGE_ID.findall(value)]
    return ids


def _unique(values, limit=MAX_ADDRESSES):
    unique = []
    for value in values:
        if value and value not in unique:
            unique.append(value)
            if len(unique) >= limit:
                break
    return tuple(unique)


def _one_line(text, limit=MAX_DIAGNOSTIC):
    text = ' '.join(text.split())
    return text[:limit] or None


class _Reader:
    "The facts of one message that every step of classify reads"

    # the headers where the address the message was sent to may be
    RECIPIENT_HEADERS = [
        'Delivered-To', 'X-Original-To', 'Envelope-To', 'X-Envelope-To',
        'To', 'Cc']

    def __init__(self, message, bounce_address):
        self.message = message
        self.bounce_address = bounce_address
        self.sender = next(iter(_addresses(_header(message, 'From'))), None)
        self.subject = _one_line(_header(message, 'Subject'), MAX_HEADER)
        self.addresses = [
            address for name in self.RECIPIENT_HEADERS
            for value in _headers(message, name)
            for address in _addresses(value)]
        self.references = _unique(
            _message_ids(_header(message, 'In-Reply-To'))
            + list(reversed(_message_ids(_header(message, 'References')))))
        self.tokens = ()
        if bounce_address:
            self.tokens = find_tokens(bounce_address, self.addresses)

    def feedback(self, kind, evidence, message_ids=(), addresses=(),
            **values):
        addresses = _unique(list(self.addresses) + list(addresses))
        tokens = ()
        if self.bounce_address:
            tokens = find_tokens(self.bounce_address, addresses)
        values.setdefault('recipients', ())
        values['recipients'] = _unique(values['recipients'])
        return Feedback(
            kind, message_ids=_unique(message_ids), addresses=addresses,
            tokens=tokens, sender=self.sender, subject=self.subject,
            evidence=evidence, **values)

    def returned(self):
        "The Message-IDs and the Return-Path of the email a report returns"
        headers = _returned_headers(self.message)
        if headers is None:
            return [], []
        message_ids = _message_ids(_header(headers, 'Message-ID'))
        addresses = [
            address for name in ['Return-Path', 'Sender']
            for address in _addresses(_header(headers, name))]
        return message_ids, addresses


# Status codes

# an enhanced status code (RFC 3463), not a part of a version or an address
_STATUS = re.compile(r'(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)')
# a basic SMTP reply code where servers write it
_SMTP_CODE = re.compile(r'(?:^|:|<<<)\s*([45][0-5]\d)(?=[ -]|$)', re.MULTILINE)
_MAILBOX_FULL = re.compile(
    r'mailbox (is )?full|mailbox full|full mailbox|over ?quota|'
    r'quota (exceeded|full)|exceed(ed|s)? (the |their |his |her )?'
    r'(storage|quota|mailbox)|insufficient (system )?storage|'
    r'mailbox size limit|out of storage|postfach (ist )?voll|'
    r'boîte (aux lettres |de réception )?pleine|buzón lleno',
    re.IGNORECASE)


def _status(text):
    "The first enhanced status code of text, or None"
    match = _STATUS.search(text or '')
    return '.'.join(match.groups()) if match else None


def _bounce_kind(status, diagnostic):
    "The kind of a failure of status with the diagnostic"
    full = bool(status and status[1:] == '.2.2') or bool(
        _MAILBOX_FULL.search(diagnostic or ''))
    if status and status[0] == '5' and not full:
        return HARD_BOUNCE
    return SOFT_BOUNCE if (status or full) else HARD_BOUNCE


# 1. Delivery status reports (RFC 3464)

def _status_blocks(part):
    "The field blocks of a delivery-status part"
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    blocks = [block for block in payload if isinstance(block, Message)]
    if part.get_content_type() == 'message/global-delivery-status' and (
            len(blocks) == 1):
        # parsed as a message: its body holds the other blocks
        rest = blocks[0].get_payload()
        if isinstance(rest, str):
            blocks += [
                HeaderParser().parsestr(text, headersonly=True)
                for text in re.split(r'\n\s*\n', rest[:MAX_TEXT])
                if text.strip()]
    return blocks[:MAX_ADDRESSES + 1]


def _field_address(value):
    "The address of a report field such as 'rfc822; a@example.com'"
    return next(iter(_addresses(value)), None)


def _delivery_status(reader):
    blocks = [
        block for part in _parts(reader.message)
        if part.get_content_type() in {
            'message/delivery-status', 'message/global-delivery-status'}
        for block in _status_blocks(part)]
    failures, delays, others, fields = [], [], [], []
    for block in blocks:
        action = _header(block, 'Action').strip().lower()
        recipient = _field_address(_header(block, 'Original-Recipient'))
        final = _field_address(_header(block, 'Final-Recipient'))
        fields.extend(filter(None, [recipient, final]))
        # the address the email was sent to, as known before the relays
        recipient = recipient or final or _field_address(
            _header(block, 'X-Actual-Recipient'))
        diagnostic = _header(block, 'Diagnostic-Code')
        diagnostic = _one_line(_ADDRESS_TYPE.sub('', diagnostic, count=1))
        status = _status(_header(block, 'Status')) or _status(diagnostic)
        if not status and diagnostic:
            code = _SMTP_CODE.search(diagnostic)
            status = f'{code.group(1)[0]}.0.0' if code else None
        entry = (recipient, status, diagnostic)
        # some servers comment their action, opensmtpd writes "error"
        if action.startswith(('failed', 'error')):
            failures.append(entry)
        elif action.startswith('delayed'):
            delays.append(entry)
        elif action:
            others.append(entry)
    if not (failures or delays or others):
        return None
    message_ids, addresses = reader.returned()
    addresses += fields
    if failures:
        kinds = [(_bounce_kind(s, d), r, s, d) for r, s, d in failures]
        hard = [k for k in kinds if k[0] == HARD_BOUNCE]
        kind, _, status, diagnostic = (hard or kinds)[0]
        recipients = [r for k, r, _, _ in kinds if k == kind]
    elif delays:
        kind = DELAY
        recipients = [r for r, _, _ in delays]
        _, status, diagnostic = delays[0]
    else:
        return reader.feedback(
            OTHER, 'delivered', message_ids, addresses,
            recipients=[r for r, _, _ in others])
    return reader.feedback(
        kind, 'delivery-status', message_ids, addresses, status=status,
        diagnostic=diagnostic, recipients=recipients)


# 2. Feedback reports (RFC 5965) and the notifications of providers

_COMPLAINT_TYPES = {'abuse', 'fraud'}


def _feedback_report(reader):
    report = next((
            part for part in _parts(reader.message)
            if part.get_content_type() == 'message/feedback-report'), None)
    if report is None:
        return None
    fields = _embedded(report)
    if fields is None:
        fields = HeaderParser().parsestr(_text(report), headersonly=True)
    feedback_type = _header(fields, 'Feedback-Type').strip().lower()
    message_ids, addresses = reader.returned()
    headers = _returned_headers(reader.message)
    recipients = [
        address for value in _headers(fields, 'Original-Rcpt-To')
        for address in _addresses(value)]
    if not recipients and headers is not None:
        recipients = _addresses(_header(headers, 'To'))
    addresses += _addresses(_header(fields, 'Original-Mail-From'))
    addresses += recipients
    kind = COMPLAINT if feedback_type in _COMPLAINT_TYPES else OTHER
    return reader.feedback(
        kind, 'feedback-report', message_ids, addresses,
        recipients=recipients, feedback_type=feedback_type or None)


def _jmrp(reader):
    "A complaint of Outlook.com's Junk Mail Reporting Program"
    headers = _returned_headers(reader.message)
    if headers is None:
        return None
    recipients = _addresses(_header(headers, 'X-HmXmrOriginalRecipient'))
    if not recipients:
        return None
    message_ids, addresses = reader.returned()
    return reader.feedback(
        COMPLAINT, 'jmrp', message_ids, addresses + recipients,
        recipients=recipients, feedback_type='abuse')


_SES_TYPES = {'Bounce', 'Complaint', 'DeliveryDelay', 'Delivery'}


def _ses_notification(reader):
    """A notification of Amazon SES by email (through SNS, as JSON or as
    the JSON and a footer)"""
    for part in _parts(reader.message):
        if part.get_content_type() not in {'text/plain', 'application/json'}:
            continue
        text = _text(part)
        start = text.find('{')
        if start < 0 or (
                'notificationType' not in text and 'eventType' not in text):
            continue
        try:
            data, _ = json.JSONDecoder().raw_decode(text, start)
            if isinstance(data, dict) and isinstance(
                    data.get('Message'), str):
                # the envelope of SNS around the notification
                data = json.loads(data['Message'])
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        notification = data.get('notificationType') or data.get('eventType')
        if notification in _SES_TYPES:
            return _ses_feedback(reader, notification, data)
    return None


def _dicts(value):
    return [item for item in value if isinstance(item, dict)] if isinstance(
        value, list) else []


def _strings(*values):
    return [value for value in values if isinstance(value, str)]


def _ses_feedback(reader, notification, data):
    def section(name):
        value = data.get(name)
        return value if isinstance(value, dict) else {}
    mail = section('mail')
    headers = section('mail').get('commonHeaders')
    headers = headers if isinstance(headers, dict) else {}
    message_ids = [
        message_id for value in _strings(headers.get('messageId'))
        for message_id in _message_ids(value)]
    message_ids += [
        message_id for header in _dicts(mail.get('headers'))
        if str(header.get('name', '')).lower() == 'message-id'
        for value in _strings(header.get('value'))
        for message_id in _message_ids(value)]
    addresses = [
        address for value in _strings(mail.get('source'))
        for address in _addresses(value)]
    addresses += [
        address for header in _dicts(mail.get('headers'))
        if str(header.get('name', '')).lower() == 'return-path'
        for value in _strings(header.get('value'))
        for address in _addresses(value)]

    def recipients(entries):
        return [
            address for entry in _dicts(entries)
            for value in _strings(entry.get('emailAddress'))
            for address in _addresses(value)]

    if notification == 'Bounce':
        bounce = section('bounce')
        entries = _dicts(bounce.get('bouncedRecipients'))
        first = entries[0] if entries else {}
        status = _status(next(iter(_strings(first.get('status'))), None))
        diagnostic = _one_line(_ADDRESS_TYPE.sub(
                '', next(iter(_strings(first.get('diagnosticCode'))), ''),
                count=1))
        if bounce.get('bounceType') == 'Permanent':
            kind = _bounce_kind(status or '5.0.0', diagnostic)
        else:
            # Transient, and Undetermined: nothing says the address is gone
            kind = SOFT_BOUNCE
        return reader.feedback(
            kind, 'ses-notification', message_ids, addresses,
            status=status, diagnostic=diagnostic,
            recipients=recipients(entries))
    if notification == 'Complaint':
        complaint = section('complaint')
        feedback_type = next(iter(_strings(
                    complaint.get('complaintFeedbackType'))), None)
        feedback_type = feedback_type.lower() if feedback_type else None
        kind = COMPLAINT if feedback_type in (
            _COMPLAINT_TYPES | {None}) else OTHER
        return reader.feedback(
            kind, 'ses-notification', message_ids, addresses,
            recipients=recipients(complaint.get('complainedRecipients')),
            feedback_type=feedback_type)
    if notification == 'DeliveryDelay':
        delay = section('deliveryDelay')
        return reader.feedback(
            DELAY, 'ses-notification', message_ids, addresses,
            recipients=recipients(delay.get('delayedRecipients')))
    return reader.feedback(OTHER, 'delivered', message_ids, addresses)


# 3. The other formats of mail systems

_MAIL_SYSTEM_USERS = re.compile(
    r'(mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|mdaemon|'
    r'mail[-_.]?delivery[-_.]?(sub)?system|microsoftexchange[0-9a-f]*)',
    re.IGNORECASE)
_MAIL_SYSTEM_NAMES = re.compile(
    r'mail delivery (sub)?system|mailer[- ]daemon|postmaster',
    re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r'undeliver|undelivered|delivery (status notification|failure|failed|'
    r'has failed|notification)|mail delivery failed|failure notice|'
    r'returned mail|non[- ]?delivery|nondeliverable|unzustellbar|'
    r'non remis|no entregado|mail system error|message not delivered|'
    r'could not be delivered', re.IGNORECASE)
# Where the text of a notification stops: the email it returns
_RETURNED = re.compile(
    r'^(-+ ?(this is a copy|below this line|original message|'
    r'the header of the original|returned (mail|message)|start of)|'
    r'(Received|Return-Path|DKIM-Signature|Message-ID): )',
    re.IGNORECASE | re.MULTILINE)
_INLINE_MESSAGE_ID = re.compile(
    r'^Message-ID:\s*(<[^<>\s]{1,250}>)', re.IGNORECASE | re.MULTILINE)
_INLINE_RETURN_PATH = re.compile(
    r'^Return-Path:\s*<([^<>\s]{1,320})>', re.IGNORECASE | re.MULTILINE)
_DELAY_WORDS = re.compile(
    r'delayed|not yet been delivered|will (continue to )?(re)?try|'
    r'still trying|has not been delivered yet', re.IGNORECASE)


def _from_mail_system(reader):
    "Tell whether the message is written by a mail system"
    message = reader.message
    if message.get('X-Failed-Recipients') is not None:
        return True
    if message.get_content_type() == 'multipart/report':
        return True
    sender = _header(message, 'From')
    user = (reader.sender or '').rpartition('@')[0]
    if _MAIL_SYSTEM_USERS.fullmatch(user) or _MAIL_SYSTEM_NAMES.search(
            sender.split('<')[0]):
        return True
    return (_header(message, 'Return-Path').strip() == '<>'
        and bool(_BOUNCE_SUBJECT.search(reader.subject or '')))


def _notification_text(message):
    "The text of a notification, without the email it returns"
    for part in _parts(message):
        if part.get_content_maintype() == 'multipart':
            continue
        if part.get_content_type() == 'text/plain':
            text = _text(part)
            match = _RETURNED.search(text)
            return text[:match.start()] if match else text
    return ''


def _flufl_failures(message):
    "The temporary and permanent failed addresses that flufl.bounce finds"
    if flufl_bounce is None:
        return [], []
    try:
        temporary, permanent = flufl_bounce.all_failures(message)
    except Exception:
        return [], []

    def addresses(values):
        return [
            address for value in sorted(values)
            for address in _addresses(value.decode('ascii', 'replace'))]
    return addresses(temporary), addresses(permanent)


def _mail_system(reader):
    if not _from_mail_system(reader):
        return None
    text = _notification_text(reader.message)
    temporary, permanent = _flufl_failures(reader.message)
    status = _status(text)
    diagnostic = None
    if status:
        line = next(
            line for line in text.splitlines()
            if _STATUS.search(line))
        diagnostic = _one_line(line)
    else:
        code = _SMTP_CODE.search(text)
        if code:
            status = f'{code.group(1)[0]}.0.0'
            line_start = text.rfind('\n', 0, code.start(1)) + 1
            line_end = text.find('\n', code.start(1))
            diagnostic = _one_line(
                text[line_start:line_end if line_end >= 0 else None])
    message_ids, addresses = reader.returned()
    body = '\n'.join(
        _text(part) for part in _parts(reader.message)
        if part.get_content_maintype() == 'text')
    message_ids += _INLINE_MESSAGE_ID.findall(body)
    addresses += [
        address for value in _INLINE_RETURN_PATH.findall(body)
        for address in _addresses(value)]
    if permanent:
        kind, recipients, evidence = (
            _bounce_kind(status, text), permanent, 'flufl.bounce')
    elif temporary:
        kind, recipients, evidence = DELAY, temporary, 'flufl.bounce'
    elif _DELAY_WORDS.search(text):
        kind, recipients, evidence = DELAY, (), 'delay-words'
    elif status and status[0] in '45':
        kind, recipients, evidence = (
            _bounce_kind(status, text), (), 'status-code')
    else:
        return reader.feedback(OTHER, 'mail-system', message_ids, addresses)
    return reader.feedback(
        kind, evidence, message_ids, addresses, status=status,
        diagnostic=diagnostic, recipients=recipients)


# 4. Auto-replies (RFC 3834 and the usual others)

_AUTOREPLY_HEADERS = [
    'X-Autoreply', 'X-Autorespond', 'X-Autoresponder', 'X-AutoReply-From',
    'X-Mail-Autoreply', 'X-Autogenerated', 'X-Vacation',
    'X-MS-Exchange-Inbox-Rules-Loop']
_AUTOREPLY_SUBJECT = re.compile(
    r'auto(matic|matisch|matische|matiskt|matyczna|maattinen)?'
    r'[-_ ]?(reply|response|respond|antwort|antwoord|svar|odpowied|'
    r'vastaus)|'
    r'out of (the )?office|\bOOO\b|away from (the |my )?(office|desk)|'
    r'on (vacation|holiday|leave)|vacation (reply|notice|message)|'
    r'abwesenheit|nicht im büro|außer haus|'
    r'réponse automatique|absent(e)? du bureau|absence du bureau|'
    r'respuesta automática|fuera de la oficina|'
    r'risposta automatica|fuori (sede|ufficio)|'
    r'afwezig|niet op kantoor|'
    r'resposta automática|fora do escritório|ausente do escritório|'
    r'frånvaro|ikke på kontoret|fraværende|poissa toimistolta|'
    r'poza biurem|nieobecność|'
    r'автоматический ответ|автоответ|нет на месте|вне офиса|'
    r'automatická odpověď|mimo kancelář|otomatik yanıt|ofis dışında|'
    r'自动回复|自動回覆|自動応答|自動返信|不在|부재',
    re.IGNORECASE)


def _auto_reply(reader):
    message = reader.message
    auto_submitted = _header(message, 'Auto-Submitted').strip().lower()
    precedence = _header(message, 'Precedence').strip().lower()
    if auto_submitted and not auto_submitted.startswith('no'):
        evidence = 'auto-submitted'
    elif any(message.get(name) is not None for name in _AUTOREPLY_HEADERS):
        evidence = 'autoreply-header'
    elif precedence == 'auto_reply':
        evidence = 'precedence'
    elif not (reader.references or reader.tokens):
        # the weaker signs of a message that refers to nothing sent are
        # those of spam as well
        return None
    elif precedence in {'bulk', 'junk', 'list'}:
        evidence = 'precedence'
    elif message.get('X-Auto-Response-Suppress') is not None:
        evidence = 'autoreply-header'
    elif _AUTOREPLY_SUBJECT.search(reader.subject or ''):
        evidence = 'subject'
    else:
        return None
    return reader.feedback(AUTO_REPLY, evidence, reader.references)


# 5. Replies

def _reply(reader):
    if reader.references:
        return reader.feedback(REPLY, 'in-reply-to', reader.references)
    if reader.tokens:
        return reader.feedback(REPLY, 'token')
    return None


_STEPS = [
    _delivery_status, _feedback_report, _jmrp, _ses_notification,
    _mail_system, _auto_reply, _reply]


def classify(raw, bounce_address=None):
    """Return the Feedback of the message raw (bytes), never raising for
    what raw holds

    bounce_address is the address without token of the VERP addresses, to
    find the tokens; ValueError is raised when it is no such address."""
    if bounce_address is not None:
        _split_bounce_address(bounce_address)
    if isinstance(raw, str):
        raw = raw.encode('utf-8', 'surrogateescape')
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return Feedback(OTHER, evidence='unreadable')
    try:
        message = message_from_bytes(bytes(raw[:MAX_BYTES]))
        reader = _Reader(message, bounce_address)
        for step in _STEPS:
            feedback = step(reader)
            if feedback is not None:
                return feedback
        return reader.feedback(OTHER, 'unrelated')
    except Exception:
        # a message that the email package cannot read is no feedback
        return Feedback(OTHER, evidence='unreadable')
