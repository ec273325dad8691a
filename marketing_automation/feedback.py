# SPDX-License-Identifier: GPL-3.0-or-later
"""What the mail world says back about the emails sent, free of the database.

Each marketing email leaves with an envelope sender (the Return-Path, SMTP's
``MAIL FROM``) that names its record activity without revealing it (VERP)::

    token = make_token(secret, record_activity.id)
    envelope_sender = verp_address('bounce@shop.example.com', token)
    # 'bounce+<token>@shop.example.com'

so that whatever comes back to that address says which entry it is about.
The envelope sender is no header of the message: it is the sender given to
the SMTP server (``from_addr`` of ``smtplib.SMTP.sendmail``), which the
receiving server writes as Return-Path; the From stays as it is.
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
- ``message_id``: its own Message-ID, by which a message posted twice is
  counted once (None when it has none: a digest of the bytes then);
- ``evidence``: what the kind rests on (``'delivery-status'``,
  ``'feedback-report'``, ``'flufl.bounce'``, ``'auto-submitted'``,
  ``'in-reply-to'``, ``'token'``…), for the logs and the curious.

The caller finds the entry by the first token that verifies, else by the
Message-IDs it sent::

    ids = (read_token(secret, token) for token in feedback.tokens)
    record_activity_id = next(filter(None, ids), None)

A message that names no entry this way should have no effect, whatever its
kind: anyone can write "Action: failed" in a message to the bounce address.
``find_tokens(bounce_address, values)`` finds the tokens in any header
values, and ``normalize_address`` gives an address as ``recipients`` hold
them.

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
   References) or reached a VERP address of bounce_address;
6. anything else is ``OTHER``: spam to the bounce address, a forwarded
   report, malformed MIME.

Without ``flufl.bounce`` installed (the module's ``feedback`` extra), the
formats of step 3 are still recognised as a mail system's, and their kind
and status read from the text, but their failed addresses are not.

Limits, so that a message costs a millisecond or two, and a tenth of a
second at worst, whatever it holds:

- only the first ``MAX_BYTES`` (128 KiB) of a message are read: a report
  comes before the email it returns, and a reply's headers before its
  body; and they hold at most ``MAX_PARTS`` (64) multipart boundaries,
  since the email package compares each line with every open boundary;
- at most ``MAX_PARTS`` MIME parts, ``MAX_DEPTH`` (8) levels deep, are
  looked at, and a message that a part carries (a forwarded email, the
  email a report returns) is read for its headers only;
- ``flufl.bounce`` reads the first ``MAX_SCAN`` (32 KiB) of the message,
  where a notification is, since its detectors read every line;
- a header is read up to ``MAX_HEADER`` (8 KiB) characters, a text part up
  to ``MAX_TEXT`` (32 Ki) characters; a diagnostic is cut at
  ``MAX_DIAGNOSTIC`` (500) characters; at most ``MAX_ADDRESSES`` (32)
  addresses, Message-IDs and report blocks are kept.
"""

import base64
import binascii
import json
import re
from collections import namedtuple
from email import message_from_bytes, message_from_string
from email.header import decode_header
from email.message import Message
from email.parser import HeaderParser
from functools import cached_property
from itertools import islice

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
    'MAX_BYTES', 'MAX_SCAN', 'MAX_PARTS', 'MAX_DEPTH', 'MAX_HEADER',
    'MAX_TEXT', 'MAX_DIAGNOSTIC', 'MAX_ADDRESSES']

HARD_BOUNCE = 'hard_bounce'
SOFT_BOUNCE = 'soft_bounce'
DELAY = 'delay'
COMPLAINT = 'complaint'
AUTO_REPLY = 'auto_reply'
REPLY = 'reply'
OTHER = 'other'
KINDS = (HARD_BOUNCE, SOFT_BOUNCE, DELAY, COMPLAINT, AUTO_REPLY, REPLY, OTHER)

MAX_BYTES = 128 * 1024
MAX_SCAN = 32 * 1024
MAX_PARTS = 64
MAX_DEPTH = 8
MAX_HEADER = 8 * 1024
MAX_TEXT = 32 * 1024
MAX_DIAGNOSTIC = 500
MAX_ADDRESSES = 32

Feedback = namedtuple('Feedback', [
        'kind', 'status', 'diagnostic', 'recipients', 'message_ids',
        'addresses', 'tokens', 'feedback_type', 'sender', 'subject',
        'message_id', 'evidence'],
    defaults=[None, None, (), (), (), (), None, None, None, None, None])
Feedback.__doc__ = "What a message received on the bounce address says"


# VERP tokens

_VERP = 'verp'
# the id in base 36, then the 128 bits of the signature in base 32
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


def _base32(digest):
    return base64.b32encode(digest).decode('ascii').rstrip('=').lower()


def make_token(secret, record_activity_id):
    """Return the VERP token of the record activity id, signed with secret:
    at most 39 lowercase letters and digits"""
    if (not isinstance(record_activity_id, int)
            or isinstance(record_activity_id, bool)
            or not 0 < record_activity_id <= _MAX_ID):
        raise ValueError(f"Invalid record activity id: {record_activity_id!r}")
    signature = mailing.sign(secret, _VERP, str(record_activity_id))
    # the same 128 bits in an alphabet without capitals
    return _base36(record_activity_id) + _base32(
        base64.urlsafe_b64decode(signature + '=='))


def read_token(secret, token):
    """Return the record activity id of a token of make_token signed with
    secret, or None; case is ignored and nothing raises"""
    if (not isinstance(token, str) or len(token) > _MAX_LOCAL_PART
            or not token.isascii()):
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
    if _base32(digest) != match.group(2):
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


# Addresses

def _domain_key(domain):
    "The domain as compared: lowercase, IDNA, without the final dot"
    domain = domain.strip().rstrip('.').lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode('idna').decode('ascii')
    except UnicodeError:
        return domain


_SPACE = re.compile(r'\s')


def normalize_address(address):
    """Return the addr-spec address lowercased, unquoted and with an IDNA
    domain, or None when it is not an address"""
    if not isinstance(address, str) or len(address) > 320:
        return None
    local, at, domain = address.strip().strip('<>').strip().rpartition('@')
    local = local.strip()
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = re.sub(r'\\(.)', r'\1', local[1:-1])
    domain = _domain_key(domain)
    if (not at or not local or not domain or '@' in domain
            or not (local + domain).isprintable()
            or _SPACE.search(local + domain)):
        return None
    return f'{local.lower()}@{domain}'


# The addresses between angle brackets are the addresses of a header, the
# rest is names and comments; else every addr-spec of it counts
_ANGLE_ADDRESS = re.compile(r'<([^<>]{1,320})>')
# (longer local parts than RFC 5321 allows: forwarders write them)
_ADDR_SPEC = re.compile(
    r'(?:"(?:[^"\\\r\n]|\\.){1,128}"|[^\s<>()\[\],;:"@]{1,128})'
    r'@[^\s<>()\[\],;:"@]{1,255}')
# A forwarder's Sender Rewriting Scheme keeps the address as its last two
# fields: SRS0=hash=tt=domain=local
_SRS = re.compile(r'srs[01][=+-].*=([^=@]+)=([^=@]+)')


def _addresses(value):
    """Return the normalised addresses of a header or report field value
    ('Name <a@b>', 'a@b (comment)', 'rfc822; a@b'…)"""
    if not value:
        return []
    value = value[:MAX_HEADER]
    addresses = []
    for span in _ANGLE_ADDRESS.findall(value) or [value]:
        for match in _ADDR_SPEC.finditer(span):
            address = normalize_address(match.group())
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

def _bounded(raw):
    """The bytes of raw that are read: MAX_BYTES, and no more than MAX_PARTS
    multipart boundaries, since the email package compares each line with
    every boundary open around it"""
    data = bytes(raw[:MAX_BYTES])
    boundaries = islice(
        re.finditer(rb'boundary\s*=', data, re.IGNORECASE), MAX_PARTS, None)
    extra = next(boundaries, None)
    return data[:extra.start()] if extra else data


def _is_text(value):
    "Tell whether value holds no surrogate (the bytes the parser kept)"
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def _bytes_text(data, charset):
    "Return data decoded with charset, else UTF-8, else Latin-1"
    charset = (charset or 'utf-8').lower()
    if charset in {'unknown-8bit', 'us-ascii', 'ascii'}:
        charset = 'utf-8'
    try:
        return data.decode(charset)
    except (LookupError, ValueError):
        # an unknown charset, a name Python refuses, bytes not of it
        pass
    try:
        return data.decode('utf-8')
    except UnicodeError:
        return data.decode('latin-1')


def _decode(value):
    "Return the text of a header value, its encoded words decoded"
    if value is None:
        return ''
    if isinstance(value, str):
        if '=?' not in value and value.isascii():
            return value[:MAX_HEADER]
        if not _is_text(value):
            # the 8-bit bytes of a header read by the email package
            return _bytes_text(
                value[:MAX_HEADER].encode('utf-8', 'surrogateescape'), None)
    try:
        chunks = decode_header(value)
    except Exception:
        return str(value)[:MAX_HEADER]
    return ''.join(
        chunk if isinstance(chunk, str) else _bytes_text(chunk, charset)
        for chunk, charset in chunks)[:MAX_HEADER]


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
    """Return the (content type, part) of message and its parts, message
    first, without looking into the messages they carry, MAX_PARTS at
    most"""
    parts = []
    stack = [(message, 0)]
    while stack and len(parts) < MAX_PARTS:
        part, depth = stack.pop()
        content_type = part.get_content_type()
        parts.append((content_type, part))
        if content_type.startswith('multipart/') and depth < MAX_DEPTH:
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(
                    (child, depth + 1) for child in reversed(payload)
                    if isinstance(child, Message))
    return parts


def _text(part):
    "The text of a leaf part, decoded, MAX_TEXT characters at most"
    try:
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except Exception:
        return ''
    if not isinstance(payload, bytes):
        return ''
    return _bytes_text(payload[:MAX_TEXT * 4], charset)[:MAX_TEXT]


def _embedded(part):
    "The message that a message/* part carries, or None"
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(
            payload[0], Message):
        return payload[0]
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


_RETURNED_TYPES = {'message/rfc822', 'message/global'}
_RETURNED_HEADERS_TYPES = {
    'text/rfc822-headers', 'message/rfc822-headers', 'message/global-headers'}


class _Reader:
    "The facts of one message that the steps of classify read"

    # the headers where the address the message was sent to may be
    RECIPIENT_HEADERS = [
        'Delivered-To', 'X-Original-To', 'Envelope-To', 'X-Envelope-To',
        'To', 'Cc']

    def __init__(self, data, bounce_address):
        self.data = data
        self.message = message = message_from_bytes(data)
        self.bounce_address = bounce_address
        self.parts = _parts(message)
        self.header_names = {name.lower() for name in message.keys()}
        self.sender = next(iter(_addresses(_header(message, 'From'))), None)
        self.subject = _one_line(_header(message, 'Subject'), MAX_HEADER)
        self.message_id = next(
            iter(_message_ids(_header(message, 'Message-ID'))), None)
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

    def parts_of(self, *content_types):
        "The parts of the message of content_types"
        return [part for type_, part in self.parts if type_ in content_types]

    @cached_property
    def returned_headers(self):
        "The headers of the email that a report returns (a Message), or None"
        for content_type, part in self.parts:
            if content_type in _RETURNED_TYPES:
                embedded = _embedded(part)
                if embedded is not None:
                    return embedded
            elif content_type in _RETURNED_HEADERS_TYPES:
                # a message/* part is parsed as a message, a text/* one not
                embedded = _embedded(part)
                if embedded is None:
                    embedded = HeaderParser().parsestr(
                        _text(part), headersonly=True)
                return embedded
        return None

    def returned(self):
        "The Message-IDs and the Return-Path of the email a report returns"
        headers = self.returned_headers
        if headers is None:
            return [], []
        message_ids = _message_ids(_header(headers, 'Message-ID'))
        addresses = [
            address for name in ['Return-Path', 'Sender']
            for address in _addresses(_header(headers, name))]
        return message_ids, addresses

    def feedback(self, kind, evidence, message_ids=(), addresses=(),
            recipients=(), **values):
        "The Feedback of the message"
        addresses = _unique(list(self.addresses) + list(addresses))
        tokens = ()
        if self.bounce_address:
            tokens = find_tokens(self.bounce_address, addresses)
        # the returned email says best what it is; In-Reply-To next
        message_ids = list(message_ids) + list(self.references)
        return Feedback(
            kind, recipients=_unique(recipients),
            message_ids=_unique(message_ids), addresses=addresses,
            tokens=tokens, sender=self.sender, subject=self.subject,
            message_id=self.message_id, evidence=evidence, **values)


# Status codes

# an enhanced status code (RFC 3463), not a part of a version or an address
_STATUS = re.compile(r'(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)')
# a basic SMTP reply code where servers write it
_SMTP_CODE = re.compile(r'(?:^|:|<<<)\s*([45][0-5]\d)(?=[ -]|$)', re.MULTILINE)
# an address type before a diagnostic ('smtp; 550 …')
_DIAGNOSTIC_TYPE = re.compile(r'\s*[A-Za-z][\w.-]*\s*;\s*')
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


def _smtp_status(text):
    "The status class of the first SMTP reply code of text ('5.0.0'), or None"
    match = _SMTP_CODE.search(text or '')
    return f'{match.group(1)[0]}.0.0' if match else None


def _diagnostic(text):
    "The diagnostic of a report field, without its type"
    return _one_line(_DIAGNOSTIC_TYPE.sub('', text, count=1))


def _bounce_kind(status, diagnostic):
    """The kind of a failure of status with the diagnostic: hard for 5.x.x,
    soft for 4.x.x and a full mailbox, hard without a status"""
    full = bool(status and status[1:] == '.2.2') or bool(
        _MAILBOX_FULL.search(diagnostic or ''))
    if status and status[0] == '5' and not full:
        return HARD_BOUNCE
    return SOFT_BOUNCE if (status or full) else HARD_BOUNCE


# 1. Delivery status reports (RFC 3464, RFC 6533)

def _status_blocks(part):
    "The field blocks of a delivery-status part"
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    blocks = [block for block in payload if isinstance(block, Message)]
    if part.get_content_type() == 'message/global-delivery-status' and (
            len(blocks) == 1):
        # parsed as a message: its body holds the other blocks, in UTF-8
        rest = blocks[0].get_payload(decode=True)
        if isinstance(rest, bytes):
            rest = rest[:MAX_TEXT].decode('utf-8', 'replace')
            blocks += [
                HeaderParser().parsestr(text, headersonly=True)
                for text in re.split(r'\n\s*\n', rest) if text.strip()]
    return blocks[:MAX_ADDRESSES + 1]


def _field_address(block, name):
    "The address of the report field name, such as 'rfc822; a@b', or None"
    return next(iter(_addresses(_header(block, name))), None)


def _delivery_status(reader):
    blocks = [
        block for part in reader.parts_of(
            'message/delivery-status', 'message/global-delivery-status')
        for block in _status_blocks(part)]
    failures, delays, others, fields = [], [], [], []
    for block in blocks:
        action = _header(block, 'Action').strip().lower()
        original = _field_address(block, 'Original-Recipient')
        final = _field_address(block, 'Final-Recipient')
        fields.extend(filter(None, [original, final]))
        # the address the email was sent to, as known before the relays
        recipient = original or final or _field_address(
            block, 'X-Actual-Recipient')
        diagnostic = _diagnostic(_header(block, 'Diagnostic-Code'))
        status = (_status(_header(block, 'Status')) or _status(diagnostic)
            or _smtp_status(diagnostic))
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
# what providers write instead of the address of the person who complained
_REDACTED = re.compile(r'x+|\*+|redacted|unknown|user')


def _feedback_report(reader):
    report = next(iter(reader.parts_of('message/feedback-report')), None)
    if report is None:
        return None
    fields = _embedded(report)
    if fields is None:
        fields = HeaderParser().parsestr(_text(report), headersonly=True)
    feedback_type = _header(fields, 'Feedback-Type').strip().lower()
    message_ids, addresses = reader.returned()
    recipients = [
        address for value in _headers(fields, 'Original-Rcpt-To')
        for address in _addresses(value)]
    if not recipients and reader.returned_headers is not None:
        recipients = [
            address for address in _addresses(
                _header(reader.returned_headers, 'To'))
            if not _REDACTED.fullmatch(address.rpartition('@')[0])]
    addresses += _addresses(_header(fields, 'Original-Mail-From'))
    addresses += recipients
    kind = COMPLAINT if feedback_type in _COMPLAINT_TYPES else OTHER
    return reader.feedback(
        kind, 'feedback-report', message_ids, addresses,
        recipients=recipients, feedback_type=feedback_type or None)


def _jmrp(reader):
    "A complaint of Outlook.com's Junk Mail Reporting Program"
    if reader.returned_headers is None:
        return None
    recipients = _addresses(
        _header(reader.returned_headers, 'X-HmXmrOriginalRecipient'))
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
    for part in reader.parts_of('text/plain', 'application/json'):
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


def _json_dicts(value):
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _json_string(value):
    return value if isinstance(value, str) else ''


def _ses_feedback(reader, notification, data):
    def section(data, name):
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    def recipients(entries):
        return [
            address for entry in _json_dicts(entries)
            for address in _addresses(_json_string(entry.get('emailAddress')))]

    mail = section(data, 'mail')
    headers = {
        _json_string(header.get('name')).lower(): _json_string(
            header.get('value'))
        for header in _json_dicts(mail.get('headers'))}
    message_ids = _message_ids(_json_string(
            section(mail, 'commonHeaders').get('messageId'))) + _message_ids(
        headers.get('message-id', ''))
    # the envelope sender, which is the VERP address
    addresses = _addresses(_json_string(mail.get('source'))) + _addresses(
        headers.get('return-path', ''))
    if notification == 'Bounce':
        bounce = section(data, 'bounce')
        entries = _json_dicts(bounce.get('bouncedRecipients'))
        first = entries[0] if entries else {}
        status = _status(_json_string(first.get('status')))
        diagnostic = _diagnostic(_json_string(first.get('diagnosticCode')))
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
        complaint = section(data, 'complaint')
        feedback_type = _json_string(
            complaint.get('complaintFeedbackType')).lower() or None
        kind = COMPLAINT if feedback_type in (
            _COMPLAINT_TYPES | {None}) else OTHER
        return reader.feedback(
            kind, 'ses-notification', message_ids, addresses,
            recipients=recipients(complaint.get('complainedRecipients')),
            feedback_type=feedback_type)
    if notification == 'DeliveryDelay':
        delay = section(data, 'deliveryDelay')
        return reader.feedback(
            DELAY, 'ses-notification', message_ids, addresses,
            recipients=recipients(delay.get('delayedRecipients')))
    return reader.feedback(OTHER, 'delivered', message_ids, addresses)


# 3. The other formats of mail systems

_MAIL_SYSTEM_USERS = re.compile(
    r'mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|mdaemon|'
    r'mail[-_.]?delivery[-_.]?(sub)?system|microsoftexchange[0-9a-f]*',
    re.IGNORECASE)
_MAIL_SYSTEM_NAMES = re.compile(
    r'mail delivery (sub)?system|mailer[- ]daemon|postmaster',
    re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r'undeliver|delivery (status notification|failure|failed|'
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
    r'still (being )?(re)?tr(y|ied)|has not been delivered yet|'
    r'no action is required|warning message only|is a warning',
    re.IGNORECASE)
_PERMANENT_WORDS = re.compile(
    r'permanent (error|failure)|failed permanently|given up|giving up|'
    r'could not be delivered|was not delivered|undeliverable|'
    r'did not reach|address(es)? failed',
    re.IGNORECASE)


def _from_mail_system(reader):
    "Tell whether the message is written by a mail system"
    message = reader.message
    if 'x-failed-recipients' in reader.header_names:
        return True
    if reader.parts[0][0] == 'multipart/report':
        return True
    user = (reader.sender or '').rpartition('@')[0]
    name = _header(message, 'From').split('<')[0]
    if _MAIL_SYSTEM_USERS.fullmatch(user) or _MAIL_SYSTEM_NAMES.search(name):
        return True
    return (_header(message, 'Return-Path').strip() == '<>'
        and bool(_BOUNCE_SUBJECT.search(reader.subject or '')))


def _notification_text(reader):
    "The text of a notification, without the email it returns"
    for part in reader.parts_of('text/plain'):
        text = _text(part)
        match = _RETURNED.search(text)
        return text[:match.start()] if match else text
    return ''


def _flufl_failures(reader):
    """The temporary and permanent failed addresses that flufl.bounce finds
    in the first MAX_SCAN bytes of the message: its detectors read every
    line of the email a notification returns"""
    if flufl_bounce is None:
        return [], []
    # parsed from text, its headers are text: the detectors lowercase them
    message = message_from_string(
        reader.data[:MAX_SCAN].decode('utf-8', 'replace'))
    if not message.get('From', '').strip():
        # a detector (Yale's) fails on a message without sender
        del message['From']
        message['From'] = '<>'
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
    text = _notification_text(reader)
    temporary, permanent = _flufl_failures(reader)
    status = _status(text)
    if status:
        line = next(line for line in text.splitlines() if _STATUS.search(line))
    else:
        status = _smtp_status(text)
        line = next((
                line for line in text.splitlines()
                if _SMTP_CODE.search(line)), '')
    diagnostic = _one_line(line)
    message_ids, addresses = reader.returned()
    body = '\n'.join(_text(part) for part in reader.parts_of('text/plain'))
    message_ids += _INLINE_MESSAGE_ID.findall(body)
    addresses += [
        address for value in _INLINE_RETURN_PATH.findall(body)
        for address in _addresses(value)]
    # a warning that quotes the SMTP dialogue looks like a failure
    warning = bool(_DELAY_WORDS.search(text)) and not (
        _PERMANENT_WORDS.search(text))
    if permanent and not warning:
        kind, recipients, evidence = (
            _bounce_kind(status, text), permanent, 'flufl.bounce')
    elif temporary or permanent:
        kind, recipients, evidence = (
            DELAY, temporary or permanent, 'flufl.bounce')
    elif warning:
        kind, recipients, evidence = DELAY, (), 'delay-words'
    elif status and status[0] in '45':
        kind, recipients, evidence = (
            _bounce_kind(status, text), (), 'status-code')
    elif _PERMANENT_WORDS.search(text):
        kind, recipients, evidence = (
            _bounce_kind(None, text), (), 'failure-words')
    else:
        return reader.feedback(OTHER, 'mail-system', message_ids, addresses)
    return reader.feedback(
        kind, evidence, message_ids, addresses, status=status,
        diagnostic=diagnostic, recipients=recipients)


# 4. Auto-replies (RFC 3834 and the usual others)

_AUTOREPLY_HEADERS = {
    'x-autoreply', 'x-autorespond', 'x-autoresponder', 'x-autoreply-from',
    'x-mail-autoreply', 'x-autogenerated', 'x-vacation',
    'x-ms-exchange-inbox-rules-loop'}
# at the start of a subject, since a person's "Re: …" may quote any word
_AUTOREPLY_SUBJECT = re.compile(
    r'\s*(\[[^]]*\]\s*)?('
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
    r'自动回复|自動回覆|自動応答|自動返信|不在|부재)|'
    # Lotus Notes: "Ann Smith is out of the office."
    r'[^:]{1,80} is (currently )?out of (the )?office',
    re.IGNORECASE)


def _auto_reply(reader):
    message = reader.message
    auto_submitted = _header(message, 'Auto-Submitted').strip().lower()
    precedence = _header(message, 'Precedence').strip().lower()
    if auto_submitted and not auto_submitted.startswith('no'):
        evidence = 'auto-submitted'
    elif reader.header_names & _AUTOREPLY_HEADERS:
        evidence = 'autoreply-header'
    elif precedence == 'auto_reply':
        evidence = 'precedence'
    elif not (reader.references or reader.tokens):
        # the weaker signs of a message that refers to nothing sent are
        # those of spam as well
        return None
    elif precedence in {'bulk', 'junk'}:
        evidence = 'precedence'
    elif 'x-auto-response-suppress' in reader.header_names:
        evidence = 'autoreply-header'
    elif _AUTOREPLY_SUBJECT.match(reader.subject or ''):
        evidence = 'subject'
    else:
        return None
    return reader.feedback(AUTO_REPLY, evidence)


# 5. Replies

def _reply(reader):
    if reader.references:
        return reader.feedback(REPLY, 'in-reply-to')
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
        raw = raw[:MAX_BYTES].encode('utf-8', 'surrogateescape')
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return Feedback(OTHER, evidence='unreadable')
    try:
        reader = _Reader(_bounded(raw), bounce_address)
        for step in _STEPS:
            feedback = step(reader)
            if feedback is not None:
                return feedback
        return reader.feedback(OTHER, 'unrelated')
    except Exception:
        # a message that the email package cannot read is no feedback
        return Feedback(OTHER, evidence='unreadable')
