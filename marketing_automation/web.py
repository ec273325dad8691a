# SPDX-License-Identifier: GPL-3.0-or-later
from sql import Null

from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta

from . import mailing

RECORD_ACTIVITY = 'marketing.automation.record.activity'
EMAIL_OPENED = RECORD_ACTIVITY + '|on_email_opened'
EMAIL_CLICKED = RECORD_ACTIVITY + '|on_email_clicked'


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
        return super()._get_methods() + [EMAIL_OPENED, EMAIL_CLICKED]

    @classmethod
    def token_url(cls, token, base, database):
        "The URL of the tracked link with token"
        return '%s/s/%s/%s' % (base, database, token)

    @classmethod
    def get_url(cls, shortened_urls, name):
        from .marketing_automation_email import automation_base, database_b64
        urls = super().get_url(shortened_urls, name)
        for shortened in shortened_urls:
            if shortened.token:
                urls[shortened.id] = cls.token_url(
                    shortened.token, automation_base(), database_b64())
        return urls

    @classmethod
    def get(cls, shortened_id):
        # The sequential ids of tracked links must not reach them.
        try:
            shortened, = cls.search([
                    ('id', '=', cls._expand(shortened_id)),
                    ('token', '=', None),
                    ], limit=1)
        except ValueError:
            raise IndexError(shortened_id)
        return shortened

    @classmethod
    def get_by_token(cls, token):
        "The tracked link of token, or None"
        if not mailing.is_token(token):
            return None
        shortened = cls.search([('token', '=', token)], limit=1)
        return shortened[0] if shortened else None

    def access(self, **values):
        if not self.token:
            return super().access(**values)
        # A tracked link fires its event at once: the event is cheap and the
        # recipient's next email must not wait for a worker.
        URLAccess = Pool().get('web.shortened_url.access')
        URLAccess(url=self, **values).save()
        if self.record and self.method:
            model, method = self.method.split('|')
            if model == self.record.__class__.__name__:
                getattr(self.record.__class__, method)([self.record])
        return self.redirect_url
