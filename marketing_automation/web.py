# SPDX-License-Identifier: GPL-3.0-or-later
import datetime

from sql import Null

from trytond import backend
from trytond.config import config
from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import mailing, tools, urls
from .tools import id_batches

RECORD_ACTIVITY = 'marketing.automation.record.activity'
EMAIL_OPENED = RECORD_ACTIVITY + '|on_email_opened'
EMAIL_CLICKED = RECORD_ACTIVITY + '|on_email_clicked'
# the link that only scanners follow: it fires nothing
EMAIL_TRAP = RECORD_ACTIVITY + '|on_email_trap'
# the kind of request in the event ledger of each method
EVENT_KINDS = {
    EMAIL_OPENED: 'open',
    EMAIL_CLICKED: 'click',
    EMAIL_TRAP: 'trap',
    }


class ShortenedURL(metaclass=PoolMeta):
    __name__ = 'web.shortened_url'

    token = fields.Char(
        "Token", readonly=True, strip=False,
        help="The unguessable key of a tracked link in its URL.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t, (t.token, Index.Equality()), where=t.token != Null))

    @classmethod
    def _get_models(cls):
        return super()._get_models() + [RECORD_ACTIVITY]

    @classmethod
    def _get_methods(cls):
        return super()._get_methods() + [
            EMAIL_OPENED, EMAIL_CLICKED, EMAIL_TRAP]

    @classmethod
    def get_url(cls, shortened_urls, name):
        values = super().get_url(shortened_urls, name)
        base, database = urls.base(), urls.database()
        for shortened in shortened_urls:
            if shortened.token:
                values[shortened.id] = urls.tracked_link_url(
                    base, database, shortened.token)
        return values

    @classmethod
    def get(cls, shortened_id):
        # The sequential ids of tracked links must not reach them.
        try:
            id_ = cls._expand(shortened_id)
            # more than a database holds in an integer
            if not 0 < id_ < 2 ** 63:
                raise ValueError(shortened_id)
            shortened, = cls.search([
                    ('id', '=', id_),
                    ('token', '=', None),
                    ], limit=1)
        except ValueError:
            raise IndexError(shortened_id)
        return shortened

    @classmethod
    def visit(cls, token, count=True, visitor=None):
        """Follow the tracked link of token.

        Returns its redirect URL and its method, or None when no link has
        this token or when its URL cannot be followed.  With count, the
        visit is recorded, and the request of visitor (a Visitor) written in
        the event ledger, which decides what it fires."""
        pool = Pool()
        URLAccess = pool.get('web.shortened_url.access')
        Event = pool.get('marketing.automation.event')
        if not mailing.is_token(token):
            return None
        table = cls.__table__()
        access = URLAccess.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        cursor.execute(*table.select(
                table.id, table.redirect_url, table.record, table.method,
                where=table.token == token, limit=1))
        row = cursor.fetchone()
        if not row:
            return None
        url_id, redirect_url, record, method = row
        # stored before links were checked, it may not fit in a Location
        if not mailing.is_web_url(redirect_url):
            return None
        if count:
            cursor.execute(*access.insert(
                    [access.create_uid, access.create_date, access.url],
                    [[transaction.user, datetime.datetime.now(), url_id]]))
            if record and method in EVENT_KINDS:
                _, record_id = record.split(',')
                Event.record(
                    url_id, int(record_id), EVENT_KINDS[method], visitor)
            elif record and method:
                model, method_name = method.split('|')
                record_model, record_id = record.split(',')
                if model == record_model:
                    Model = pool.get(model)
                    getattr(Model, method_name)([Model(int(record_id))])
        return redirect_url, method

    @classmethod
    def purge_tracking(cls):
        """Delete the tracked links of the emails, with their visits, made
        more than [marketing] tracking_retention days ago (400 by default):
        they lead nowhere after; the requests that the event ledger still
        keeps (see Event.purge) lose only their link"""
        pool = Pool()
        URLAccess = pool.get('web.shortened_url.access')
        Event = pool.get('marketing.automation.event')
        url = cls.__table__()
        access = URLAccess.__table__()
        event = Event.__table__()
        cursor = Transaction().connection.cursor()
        days = config.getint('marketing', 'tracking_retention', default=400)
        until = tools.now() - datetime.timedelta(days=days)
        # the links of Tryton's own module have no token but these methods
        tracked = url.method.in_([EMAIL_OPENED, EMAIL_CLICKED, EMAIL_TRAP])
        for ids in id_batches(url, tracked & (url.create_date < until)):
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                sub = list(sub)
                cursor.execute(*event.update(
                        [event.url], [Null],
                        where=reduce_ids(event.url, sub)))
                cursor.execute(*access.delete(
                        where=reduce_ids(access.url, sub)))
                cursor.execute(*url.delete(where=reduce_ids(url.id, sub)))
