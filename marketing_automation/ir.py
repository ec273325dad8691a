# SPDX-License-Identifier: GPL-3.0-or-later
from sql import Literal

from trytond.model import Index, fields
from trytond.pool import PoolMeta


class Email(metaclass=PoolMeta):
    __name__ = 'ir.email'

    marketing_automation_activity = fields.Many2One(
        'marketing.automation.activity', "Activity", readonly=True,
        ondelete='SET NULL')
    marketing_automation_record = fields.Many2One(
        'marketing.automation.record', "Record", readonly=True,
        ondelete='SET NULL')
    marketing_automation_test = fields.Boolean(
        "Marketing Test", readonly=True,
        help="A test email of a marketing activity, sent by a marketer.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # the test emails of a user in the last hour, against their limit
        cls._sql_indexes.add(Index(t,
                (t.create_uid, Index.Equality()),
                (t.create_date, Index.Range()),
                where=t.marketing_automation_test == Literal(True)))

    @classmethod
    def default_marketing_automation_test(cls):
        return False


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('marketing.automation.scenario|trigger',
                    "Trigger Marketing Scenarios"),
                ('marketing.automation.record.activity|process',
                    "Process Marketing Activity"),
                ('marketing.automation.event|purge',
                    "Purge Old Marketing Email Events"),
                ])
