# SPDX-License-Identifier: GPL-3.0-or-later
"""Reporting: the records of the scenarios and the done entries of the
activities, counted per period in SQL, with their rates.

The context (``marketing.automation.reporting.context``) gives the period
(year, month or day) and the dates between which the records are counted.
A row stands for one scenario, or one activity, and one period; its id is
the smallest id of the rows it counts, which is unique because the groups do
not overlap, and stable as long as that record exists.
"""
import datetime

from dateutil.relativedelta import relativedelta
from sql import Literal
from sql.aggregate import Count, Min, Sum
from sql.conditionals import Case
from sql.functions import DateTrunc

from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .marketing_automation import _as_date, _round_rate

PERIODS = {'year', 'month', 'day'}


class Context(ModelView):
    __name__ = 'marketing.automation.reporting.context'

    from_date = fields.Date(
        "From Date",
        domain=[
            If(Eval('to_date') & Eval('from_date'),
                ('from_date', '<=', Eval('to_date')),
                ()),
            ])
    to_date = fields.Date(
        "To Date",
        domain=[
            If(Eval('from_date') & Eval('to_date'),
                ('to_date', '>=', Eval('from_date')),
                ()),
            ])
    period = fields.Selection([
            ('year', "Year"),
            ('month', "Month"),
            ('day', "Day"),
            ], "Period", required=True)

    @classmethod
    def default_from_date(cls):
        "The first day of the month eleven months ago: twelve months"
        pool = Pool()
        Date = pool.get('ir.date')
        context = Transaction().context
        if 'from_date' in context:
            return context['from_date']
        return Date.today().replace(day=1) - relativedelta(months=11)

    @classmethod
    def default_to_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        context = Transaction().context
        if 'to_date' in context:
            return context['to_date']
        return Date.today()

    @classmethod
    def default_period(cls):
        return Transaction().context.get('period', 'month')


class Abstract(ModelSQL, ModelView):
    "Rows per period of the time column, between the dates of the context"

    date = fields.Date("Date", help="The first day of the period.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('date', 'ASC'))

    @classmethod
    def _period(cls):
        period = Transaction().context.get('period')
        return period if period in PERIODS else 'month'

    @classmethod
    def _column_date(cls, column):
        """The start of the period of column, named date

        The queries group by that name: the period is a parameter, and
        PostgreSQL does not take two parameters for the same expression."""
        return cls.date.sql_cast(
            DateTrunc(cls._period(), column)).as_('date')

    @classmethod
    def _where_date(cls, column):
        "Keep the rows whose column falls between the dates of the context"
        context = Transaction().context
        from_date = _as_date(context.get('from_date'))
        to_date = _as_date(context.get('to_date'))
        where = Literal(True)
        if from_date:
            where &= column >= datetime.datetime.combine(
                from_date, datetime.time())
        if to_date:
            # to_date is a whole day
            where &= column < datetime.datetime.combine(
                to_date + datetime.timedelta(days=1), datetime.time())
        return where

    @classmethod
    def series(cls, field, ids, names, period, from_date):
        """Return the rows of the records ids of field since from_date by
        period, as {id: {date: {name: value}}}"""
        series = {i: {} for i in ids}
        with Transaction().set_context(
                period=period, from_date=from_date, to_date=None,
                _check_access=False):
            for sub_ids in grouped_slice(ids):
                rows = cls.search_read(
                    [(field, 'in', list(sub_ids))],
                    fields_names=[field, 'date', *names])
                for row in rows:
                    series[row[field]][row['date']] = row
        return series


class Scenario(Abstract):
    __name__ = 'marketing.automation.reporting.scenario'

    scenario = fields.Many2One(
        'marketing.automation.scenario', "Scenario")
    record_count = fields.Integer(
        "Records", help="The records that entered the scenario.")
    record_count_blocked = fields.Integer(
        "Records Blocked", help="Those of the records that are blocked.")
    block_rate = fields.Function(
        fields.Float("Block Rate", digits=(1, 2)), 'get_rate')

    @classmethod
    def table_query(cls):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        date = cls._column_date(record.create_date)
        return record.select(
            Min(record.id).as_('id'),
            record.scenario.as_('scenario'),
            date,
            Count().as_('record_count'),
            Sum(Case((record.blocked, 1), else_=0)).as_(
                'record_count_blocked'),
            where=cls._where_date(record.create_date),
            group_by=[record.scenario, date])

    @classmethod
    def get_rate(cls, rows, name):
        return {
            r.id: _round_rate(r.record_count_blocked, r.record_count)
            for r in rows}

    def get_rec_name(self, name):
        return '%s @ %s' % (self.scenario.rec_name, self.date)


class Activity(Abstract):
    __name__ = 'marketing.automation.reporting.activity'

    activity = fields.Many2One(
        'marketing.automation.activity', "Activity")
    activity_action = fields.Selection(
        'get_activity_actions', "Activity Action")
    record_count = fields.Integer(
        "Records", help="The entries done.")
    email_sent = fields.Integer(
        "Emails Sent",
        states={
            'invisible': Eval('activity_action') != 'send_email',
            },
        help="The emails that the mail server accepted.")
    email_opened = fields.Integer(
        "Emails Opened",
        states={
            'invisible': Eval('activity_action') != 'send_email',
            },
        help="The emails sent that were opened or clicked.")
    email_clicked = fields.Integer(
        "Emails Clicked",
        states={
            'invisible': Eval('activity_action') != 'send_email',
            },
        help="The emails sent that were clicked.")
    email_open_rate = fields.Function(
        fields.Float(
            "Email Open Rate", digits=(1, 2),
            states={
                'invisible': Eval('activity_action') != 'send_email',
                },
            help="The emails opened per email sent."),
        'get_rate')
    email_click_rate = fields.Function(
        fields.Float(
            "Email Click Rate", digits=(1, 2),
            states={
                'invisible': Eval('activity_action') != 'send_email',
                },
            help="The emails clicked per email sent."),
        'get_rate')
    email_click_through_rate = fields.Function(
        fields.Float(
            "Email Click-Through Rate", digits=(1, 2),
            states={
                'invisible': Eval('activity_action') != 'send_email',
                },
            help="The emails clicked per email opened."),
        'get_rate')

    @classmethod
    def get_activity_actions(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        return Activity.get_actions()

    @classmethod
    def table_query(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        RecordActivity = pool.get('marketing.automation.record.activity')
        activity = Activity.__table__()
        record_activity = RecordActivity.__table__()
        date = cls._column_date(record_activity.at)
        sent = record_activity.email_sent == Literal(True)
        # A click proves an open, even when the open was not reported.
        opened = sent & (
            (record_activity.email_opened == Literal(True))
            | (record_activity.email_clicked == Literal(True)))
        clicked = sent & (record_activity.email_clicked == Literal(True))
        return (record_activity
            .join(activity, condition=record_activity.activity == activity.id)
            .select(
                Min(record_activity.id).as_('id'),
                activity.id.as_('activity'),
                activity.action.as_('activity_action'),
                date,
                Count().as_('record_count'),
                Sum(Case((sent, 1), else_=0)).as_('email_sent'),
                Sum(Case((opened, 1), else_=0)).as_('email_opened'),
                Sum(Case((clicked, 1), else_=0)).as_('email_clicked'),
                where=(record_activity.state == 'done')
                & cls._where_date(record_activity.at),
                group_by=[activity.id, activity.action, date]))

    @classmethod
    def get_rate(cls, rows, names):
        result = {n: {} for n in names}
        for row in rows:
            rates = {
                'email_open_rate': _round_rate(
                    row.email_opened, row.email_sent),
                'email_click_rate': _round_rate(
                    row.email_clicked, row.email_sent),
                'email_click_through_rate': _round_rate(
                    row.email_clicked, row.email_opened),
                }
            for name in names:
                result[name][row.id] = rates[name]
        return result

    def get_rec_name(self, name):
        return '%s @ %s' % (self.activity.rec_name, self.date)
