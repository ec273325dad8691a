# SPDX-License-Identifier: GPL-3.0-or-later
"""The URLs of the module, each path written once.

The routes (``routes.py``) are declared with the patterns of this module,
and the emails and the tracked links build their URLs with its functions:

- ``EMPTY_GIF``: the image that an open-tracking link redirects to;
- ``EMPTY_PAGE``: the blank page that the trap link of the scanners
  redirects to, so that the image keeps a redirect URL of its own;
- ``TRACKED_LINK``: a tracked link, found by its token;
- ``UNSUBSCRIBE``: the unsubscribe page of a recipient, found by the uuid
  of their record;
- ``PREVIEW``: the HTML of an email previewed by a marketer, found by a
  signed token;
- ``TEST_UNSUBSCRIBE``: the unsubscribe page of a test email, which changes
  nothing.

The tokens of the last two are signed with the secret of the database
(``seal``, ``unseal``, ``preview_token``, ``read_preview_token``), so that
they are read without the database but for its secret.

The database name travels in URL-safe base64 without padding, as trytond's
own routes write it; ``base()`` gives the scheme and host the recipients
reach, from ``[marketing] automation_base``.
"""
import base64
import binascii
import json
import re
from collections import namedtuple
from urllib.parse import urlencode, urlsplit

from trytond.config import config
from trytond.transaction import Transaction
from trytond.url import http_host

from . import mailing

__all__ = [
    'EMPTY_GIF', 'EMPTY_PAGE', 'TRACKED_LINK', 'UNSUBSCRIBE',
    'encode_database', 'decode_database', 'base', 'email_domain', 'database',
    'empty_gif_url', 'empty_page_url', 'tracked_link_url', 'unsubscribe_url',
    'PREVIEW', 'TEST_UNSUBSCRIBE', 'preview_url', 'test_unsubscribe_url',
    'MAX_TOKEN', 'PREVIEW_PURPOSE', 'TEST_UNSUBSCRIBE_PURPOSE', 'seal',
    'unseal', 'Ticket', 'REFERENCE', 'LANGUAGE_CODE', 'preview_token',
    'read_preview_token']

EMPTY_GIF = '/m/empty.gif'
EMPTY_PAGE = '/m/empty.html'
TRACKED_LINK = '/s/<marketing_database:database_name>/<token>'
UNSUBSCRIBE = '/m/<marketing_database:database_name>/unsubscribe'
PREVIEW = '/m/<marketing_database:database_name>/preview'
TEST_UNSUBSCRIBE = '/m/<marketing_database:database_name>/unsubscribe/test'

_VARIABLE = re.compile(r'<(?:[a-z_]+:)?([a-z_]+)>')


def _path(pattern, **values):
    "The path of the route pattern with its variables replaced by values"
    return _VARIABLE.sub(lambda match: values[match.group(1)], pattern)


def encode_database(name):
    "The name of a database as the URLs carry it"
    return base64.urlsafe_b64encode(
        name.encode('utf-8')).decode('ascii').rstrip('=')


def decode_database(value):
    """The name of the database that value carries, or ValueError when it
    does not decode to a printable name"""
    try:
        value += '=' * (-len(value) % 4)
        name = base64.urlsafe_b64decode(value.encode('ascii')).decode(
            'utf-8')
    except (binascii.Error, UnicodeError) as exception:
        raise ValueError(value) from exception
    if not name or not name.isprintable():
        raise ValueError(value)
    return name


def base():
    "The scheme and host of the URLs written into the emails"
    base = config.get('marketing', 'automation_base')
    if not base:
        base = http_host()
    return base.rstrip('/')


def email_domain():
    "The domain that ends the Message-ID of the emails"
    return urlsplit(base()).hostname or 'localhost'


def database():
    "The name of the database of the transaction as the URLs carry it"
    return encode_database(Transaction().database.name)


def empty_gif_url(base):
    return base + EMPTY_GIF


def empty_page_url(base):
    return base + EMPTY_PAGE


def tracked_link_url(base, database, token):
    "The URL of the tracked link of token; database is encoded"
    return base + _path(TRACKED_LINK, database_name=database, token=token)


def unsubscribe_url(base, database, uuid, next=None, secret=None):
    """The unsubscribe URL of the record uuid; database is encoded

    next is signed with secret so that the route may follow it."""
    query = {'r': uuid}
    if next:
        query['next'] = next
        query['s'] = mailing.sign(secret, uuid, next)
    return '%s%s?%s' % (
        base.rstrip('/'), _path(UNSUBSCRIBE, database_name=database),
        urlencode(query))


def preview_url(base, database, token):
    "The URL of the preview of token; database is encoded"
    return '%s%s?%s' % (
        base.rstrip('/'), _path(PREVIEW, database_name=database),
        urlencode({'t': token}))


def test_unsubscribe_url(base, database, token):
    "The unsubscribe URL of a test email of token; database is encoded"
    return '%s%s?%s' % (
        base.rstrip('/'), _path(TEST_UNSUBSCRIBE, database_name=database),
        urlencode({'t': token}))


# Tokens: signed, and readable without the database but for its secret

# What a token may weigh before it is read: a few ids, a model and a URL
MAX_TOKEN = 4096
# the purposes of the tokens, so that a token made for one serves no other
PREVIEW_PURPOSE = 'preview'
TEST_UNSUBSCRIBE_PURPOSE = 'test-unsubscribe'


def seal(secret, purpose, values):
    """The URL-safe token of values (a list of JSON values), signed with
    secret for purpose, so that a token made for one use serves no other"""
    payload = base64.urlsafe_b64encode(
        json.dumps(values, separators=(',', ':')).encode('utf-8')
        ).decode('ascii').rstrip('=')
    return '%s.%s' % (payload, mailing.sign(secret, purpose, payload))


def unseal(secret, purpose, token):
    "The values of a token of seal, or ValueError unless secret signed it"
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise ValueError("not a token")
    payload, dot, signature = token.partition('.')
    if not dot or not mailing.verify(secret, signature, purpose, payload):
        raise ValueError("not signed")
    try:
        values = json.loads(base64.urlsafe_b64decode(
                payload + '=' * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exception:
        raise ValueError("not a token") from exception
    if not isinstance(values, list):
        raise ValueError("not a token")
    return values


Ticket = namedtuple(
    'Ticket', ['user', 'activity', 'record', 'language', 'expires'])
Ticket.__doc__ = """What a preview token lets see: the email of activity
for record ('model,id') in language, to user until expires (a POSIX
time)"""
REFERENCE = re.compile(r'[a-z][a-z0-9_.]*,[0-9]{1,18}')
LANGUAGE_CODE = re.compile(r'[A-Za-z]{2,3}(_[A-Za-z0-9@]{2,10})?')


def preview_token(secret, ticket):
    "The token of the Ticket"
    return seal(secret, PREVIEW_PURPOSE, list(ticket))


def read_preview_token(secret, token):
    "The Ticket of a token of preview_token, or ValueError"
    values = unseal(secret, PREVIEW_PURPOSE, token)
    if len(values) != len(Ticket._fields):
        raise ValueError("not a preview token")
    ticket = Ticket(*values)
    if not (all(isinstance(getattr(ticket, f), int)
                and not isinstance(getattr(ticket, f), bool)
                for f in ['user', 'activity', 'expires'])
            and isinstance(ticket.record, str)
            and REFERENCE.fullmatch(ticket.record)
            and isinstance(ticket.language, str)
            and LANGUAGE_CODE.fullmatch(ticket.language)):
        raise ValueError("not a preview token")
    return ticket
