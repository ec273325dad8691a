# SPDX-License-Identifier: GPL-3.0-or-later
"""The routes a recipient's mail client and browser reach.

Whatever a stranger sends them, they answer 4xx and change nothing: the
database name and the tokens are checked for their shape before anything is
looked up, and a GET never unsubscribes (unless configured to).  A database
of the server without the module answers 404, and a link stored with a URL
that cannot be followed is not followed."""
from functools import wraps
from urllib.parse import urlencode

from werkzeug.routing import BaseConverter, ValidationError

from trytond.config import config
from trytond.protocols.wrappers import (
    HTTPStatus, Response, abort, exceptions, redirect, set_max_request_size,
    with_pool, with_transaction)
from trytond.tools import file_open
from trytond.transaction import Transaction
from trytond.wsgi import app

from . import mailing, urls
from .marketing_automation_event import Visitor
from .marketing_automation_preview import PreviewRefused

with file_open('marketing_automation/empty.gif', mode='rb') as _file:
    EMPTY_GIF = _file.read()
EMPTY_PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
    '<meta name="robots" content="noindex"><title></title></head>'
    '<body></body></html>\n')
# The routes are public: giving them a size of their own keeps trytond from
# reading the credentials of a request (a login on an unknown database
# answers 503), and an unsubscribe form is one field.
MAX_REQUEST_SIZE = 64 * 1024
NO_CACHE = {
    'Cache-Control': 'no-store, no-cache, must-revalidate, max-age=0',
    'Pragma': 'no-cache',
    'Expires': '0',
    }


class DatabaseConverter(BaseConverter):
    "A database name in URL-safe base64 that refuses what does not decode"

    def to_python(self, value):
        try:
            return urls.decode_database(value)
        except ValueError:
            raise ValidationError()

    def to_url(self, value):
        return urls.encode_database(value)


app.url_map.converters['marketing_database'] = DatabaseConverter


@app.error_handler
def undecodable_short_link(app, request, exception):
    """Answer 404 to a short link whose database name does not decode

    trytond's base64 converter, which web_shortener's ``/s/<db>$<id>``
    uses, raises instead of not matching; the request has then no view
    arguments yet."""
    if (request.view_args is None
            and request.path.startswith('/s/')
            and isinstance(exception, ValueError)):
        return exceptions.NotFound().get_response(request.environ)


def module_activated(func):
    """Answer 404 on the databases of the server where the module is not
    activated: the routes are the server's, the models the database's"""
    @wraps(func)
    def wrapper(request, pool, *args, **kwargs):
        try:
            pool.get('marketing.automation.record')
        except KeyError:
            abort(HTTPStatus.NOT_FOUND)
        return func(request, pool, *args, **kwargs)
    return wrapper


@app.route(urls.EMPTY_GIF, methods={'GET', 'HEAD'})
def empty_gif(request):
    return Response(EMPTY_GIF, mimetype='image/gif', headers=NO_CACHE)


@app.route(urls.EMPTY_PAGE, methods={'GET', 'HEAD'})
def empty_page(request):
    "Where the trap link leads the scanners that follow it: a blank page"
    return Response(
        EMPTY_PAGE, mimetype='text/html', headers={
            **NO_CACHE,
            'X-Robots-Tag': 'noindex',
            'X-Content-Type-Options': 'nosniff',
            'Content-Security-Policy': "default-src 'none'",
            })


@app.route(urls.TRACKED_LINK, methods={'GET', 'HEAD'})
@set_max_request_size(MAX_REQUEST_SIZE)
@with_pool
@module_activated
@with_transaction(readonly=False)
def tracked_link(request, pool, token):
    ShortenedURL = pool.get('web.shortened_url')
    # Scanners probe links with HEAD: it must not count as a visit.
    visit = ShortenedURL.visit(
        token, count=request.method == 'GET',
        visitor=Visitor(
            request.headers.get('User-Agent'), request.remote_addr))
    if visit is None:
        abort(HTTPStatus.NOT_FOUND)
    url, method = visit
    if method and method.endswith(('|on_email_opened', '|on_email_trap')):
        return redirect(url, code=HTTPStatus.FOUND, Response=_NoCacheResponse)
    return redirect(url, code=HTTPStatus.MOVED_PERMANENTLY)


class _NoCacheResponse(Response):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.headers.update(NO_CACHE)


@app.route(urls.UNSUBSCRIBE, methods={'GET', 'POST', 'HEAD'})
@set_max_request_size(MAX_REQUEST_SIZE)
@with_pool
@module_activated
@with_transaction(readonly=False)
def unsubscribe(request, pool):
    pool_get = pool.get
    Record = pool_get('marketing.automation.record')
    Secret = pool_get('marketing.automation.email.secret')
    Unsubscribe = pool_get('marketing.automation.unsubscribe', type='report')

    uuid = request.args.get('r')
    if not mailing.is_uuid(uuid):
        return invalid_unsubscribe_link(request, pool, HTTPStatus.BAD_REQUEST)
    records = Record.search([('uuid', '=', uuid)], limit=1)
    if not records:
        return invalid_unsubscribe_link(request, pool, HTTPStatus.NOT_FOUND)
    record, = records
    next_ = request.args.get('next')
    if next_:
        next_ = mailing.checked_next(
            Secret.get(), uuid, next_, request.args.get('s'))

    if request.method == 'HEAD':
        return Response(status=HTTPStatus.OK, mimetype='text/html')
    acting = (request.method == 'POST'
        or not config.getboolean(
            'marketing', 'unsubscribe_confirm', default=True))
    if acting:
        Record.block([record])
        if (request.method == 'POST'
                and request.form.get('List-Unsubscribe') == 'One-Click'):
            return Response(
                'Unsubscribed', status=HTTPStatus.OK, mimetype='text/plain')
        if next_:
            return redirect(next_, code=HTTPStatus.SEE_OTHER)
    query = {'r': uuid}
    if next_:
        query['next'] = next_
        query['s'] = request.args.get('s')
    data = {
        'action': 'done' if acting else 'confirm',
        'url': '%s?%s' % (request.path, urlencode(query)),
        }
    with Transaction().set_context(
            language=record.language or config.get(
                'database', 'language', default='en')):
        _, content, _, _ = Unsubscribe.execute([record.id], data)
    return Response(content, mimetype='text/html', headers={
            'Cache-Control': 'no-store',
            'X-Robots-Tag': 'noindex',
            })


def invalid_unsubscribe_link(request, pool, status):
    """The unsubscribe page that tells that its link is not valid, with
    status

    The recipient of a mangled link is not known: the page speaks the
    language that the browser asks for, else the default one."""
    Lang = pool.get('ir.lang')
    Unsubscribe = pool.get('marketing.automation.unsubscribe', type='report')
    if request.method == 'HEAD':
        return Response(status=status, mimetype='text/html')
    default = config.get('database', 'language', default='en')
    codes = {
        c.replace('_', '-'): c for c in Lang.get_translatable_languages()}
    language = codes.get(request.accept_languages.best_match(codes), default)
    with Transaction().set_context(language=language):
        _, content, _, _ = Unsubscribe.execute([], {'action': 'invalid'})
    return Response(content, status=status, mimetype='text/html', headers={
            'Cache-Control': 'no-store',
            'X-Robots-Tag': 'noindex',
            })


# What a marketer sees before the recipients (marketing_automation_preview.py)
# changes nothing.
PREVIEW_HEADERS = {
    'Cache-Control': 'no-store',
    'X-Robots-Tag': 'noindex',
    # the token must not leave with a click on a link of the email
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
    # the HTML is a marketer's: no script, no form, not the server's origin
    'Content-Security-Policy': (
        "sandbox allow-popups allow-popups-to-escape-sandbox; "
        "default-src 'none'; img-src http: https: data:; "
        "style-src 'unsafe-inline' http: https:; font-src http: https: data:; "
        "frame-ancestors 'none'"),
    }


@app.route(urls.PREVIEW, methods={'GET', 'HEAD'})
@set_max_request_size(MAX_REQUEST_SIZE)
@with_pool
@module_activated
@with_transaction(readonly=True)
def preview(request, pool):
    Preview = pool.get('marketing.automation.activity.preview', type='wizard')
    try:
        status, html = Preview.preview_page(request.args.get('t'))
    except PreviewRefused as refused:
        abort(refused.status)
    return Response(
        html, status=status, mimetype='text/html', headers=PREVIEW_HEADERS)


@app.route(urls.TEST_UNSUBSCRIBE, methods={'GET', 'POST', 'HEAD'})
@set_max_request_size(MAX_REQUEST_SIZE)
@with_pool
@module_activated
@with_transaction(readonly=True)
def test_unsubscribe(request, pool):
    "The unsubscribe pages of a test email, saying so; nobody unsubscribes"
    Preview = pool.get('marketing.automation.activity.preview', type='wizard')
    Unsubscribe = pool.get('marketing.automation.unsubscribe', type='report')
    token = request.args.get('t')
    try:
        language, next_ = Preview.test_unsubscribe_link(token)
    except PreviewRefused as refused:
        abort(refused.status)
    if request.method == 'HEAD':
        return Response(status=HTTPStatus.OK, mimetype='text/html')
    acting = (request.method == 'POST'
        or not config.getboolean(
            'marketing', 'unsubscribe_confirm', default=True))
    if (acting and request.method == 'POST'
            and request.form.get('List-Unsubscribe') == 'One-Click'):
        return Response(
            'Test: nothing changed', status=HTTPStatus.OK,
            mimetype='text/plain')
    data = {
        'action': 'done' if acting else 'confirm',
        'url': '%s?%s' % (request.path, urlencode({'t': token})),
        'test': True,
        'next': next_,
        }
    with Transaction().set_context(language=language):
        _, content, _, _ = Unsubscribe.execute([], data)
    return Response(content, mimetype='text/html', headers={
            'Cache-Control': 'no-store',
            'X-Robots-Tag': 'noindex',
            })
