# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import PoolMeta

RECORD_ACTIVITY = 'marketing.automation.record.activity'
EMAIL_OPENED = RECORD_ACTIVITY + '|on_email_opened'
EMAIL_CLICKED = RECORD_ACTIVITY + '|on_email_clicked'


class ShortenedURL(metaclass=PoolMeta):
    __name__ = 'web.shortened_url'

    @classmethod
    def _get_models(cls):
        return super()._get_models() + [RECORD_ACTIVITY]

    @classmethod
    def _get_methods(cls):
        return super()._get_methods() + [EMAIL_OPENED, EMAIL_CLICKED]
