# SPDX-License-Identifier: GPL-3.0-or-later
"""A module of another site, as the tests see it: it extends this module
only through the hooks a Tryton module overrides, and is registered only
when trytond runs the tests (``test_include_dirs`` of tryton.cfg).

Its overrides act only while ``[marketing_test] hooks`` is set, so that the
other tests see the module as it is:

- ``Activity.email_context`` adds the variable ``shop``;
- ``Activity.email_sender`` sends from the scenario's own address;
- ``Activity.email_headers`` adds ``X-Campaign``;
- the action ``record_visit`` runs one entry at a time through
  ``execute_record_visit``, as an action written for Tryton's own module;
- the reporting of activities counts only the entries of records that are
  not blocked, through its ``_joins`` and ``_where``, and the visits of
  each row, grouped apart and joined through ``_rows``.
"""
from sql import Literal
from sql.aggregate import Count
from sql.conditionals import Coalesce

from trytond.config import config
from trytond.model import ModelSQL, fields
from trytond.pool import Pool, PoolMeta


def hooks():
    "Whether the overrides of this module act"
    return config.getboolean('marketing_test', 'hooks', default=False)


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.action.selection.append(('record_visit', "Record Visit"))

    def email_context(self, record):
        context = super().email_context(record)
        if hooks():
            context['shop'] = 'https://shop.example.com/' + (
                record.rec_name.lower().replace(' ', '-'))
        return context

    def email_sender(self):
        if hooks():
            name = self.scenario.rec_name
            return '%s <%s@example.com>' % (
                name, name.lower().replace(' ', '-'))
        return super().email_sender()

    def email_headers(self, record):
        headers = super().email_headers(record)
        if hooks():
            headers.append(('X-Campaign', self.scenario.rec_name))
        return headers

    def execute_record_visit(self, record_activity, **kwargs):
        "Note that the party of the record was visited"
        pool = Pool()
        Visit = pool.get('marketing.automation.test.visit')
        party = record_activity.record.record.marketing_party
        if party.name.startswith("Ghost"):
            raise ValueError("nobody opens the door")
        Visit.create([{'party': party.id, 'activity': self.id}])


class Visit(ModelSQL):
    "A visit that the record_visit action noted"
    __name__ = 'marketing.automation.test.visit'

    party = fields.Many2One('party.party', "Party", required=True)
    activity = fields.Many2One(
        'marketing.automation.activity', "Activity", required=True)


class ReportingActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.activity'

    visit_count = fields.Integer("Visits", loading='lazy')

    @classmethod
    def _rows(cls, grouped):
        pool = Pool()
        Visit = pool.get('marketing.automation.test.visit')
        grouped = super()._rows(grouped)
        visit = Visit.__table__()
        visits = visit.select(
            visit.activity.as_('activity'),
            cls._date(visit.create_date),
            Count().as_('visit_count'),
            where=cls._where_date(visit.create_date),
            group_by=[visit.activity, cls._date(visit.create_date)])
        return cls._extend_rows(grouped, visits, 'activity', [
                cls.visit_count.sql_cast(
                    Coalesce(visits.visit_count, 0)).as_('visit_count'),
                ])

    @classmethod
    def _joins(cls):
        from_item, tables, withs = super()._joins()
        if hooks():
            pool = Pool()
            Record = pool.get('marketing.automation.record')
            record = Record.__table__()
            record_activity = tables['record_activity']
            from_item = from_item.join(
                record, condition=record_activity.record == record.id)
            tables['record'] = record
        return from_item, tables, withs

    @classmethod
    def _where(cls, tables, withs):
        where = super()._where(tables, withs)
        if hooks():
            where &= tables['record'].blocked == Literal(False)
        return where
