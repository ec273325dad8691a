# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.model import fields
from trytond.pool import PoolMeta


class Email(metaclass=PoolMeta):
    __name__ = 'ir.email'

    marketing_automation_activity = fields.Many2One(
        'marketing.automation.activity', "Activity", readonly=True,
        ondelete='SET NULL')
    marketing_automation_record = fields.Many2One(
        'marketing.automation.record', "Record", readonly=True,
        ondelete='SET NULL')


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
                ])
