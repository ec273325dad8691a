# SPDX-License-Identifier: GPL-3.0-or-later
"""Reporting: the records of the scenarios and the done entries of the
activities, counted per period in SQL, with their rates.

The context (``marketing.automation.reporting.context``) gives the period
(year, month or day) and the dates between which the records are counted.
A row stands for one scenario, or one activity, and one period; its id is
the smallest id of the rows it counts, which is unique because the groups do
not overlap, and stable as long as that record exists.

The query of each reporting is made of overridable parts, as in Tryton's
own module: ``_joins`` gives the tables (by name, in ``tables``) and the
``WITH`` queries (``withs``) it reads; ``_columns``, ``_where`` and
``_group_by`` take them.  The rates are columns of the query, so that the
lists sort by them.
"""
import datetime

from dateutil.relativedelta import relativedelta
from sql import Cast, Column, Literal
from sql.aggregate import Count, Min, Sum
from sql.conditionals import Case
from sql.functions import DateTrunc

from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from . import tools

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
    def table_query(cls):
        from_item, tables, withs = cls._joins()
        return cls._rows(from_item.select(
                *cls._columns(tables, withs),
                where=cls._where(tables, withs),
                group_by=cls._group_by(tables, withs),
                with_=list(withs.values()) or None))

    def get_percent(self, name):
        "The rate of the percent field name, in percent"
        rate = getattr(self, name[:-len('_percent')])
        if rate is not None:
            return float(round(rate * 100))

    @classmethod
    def _rows(cls, grouped):
        """The query of the rows from grouped, the query of the counts of
        each row

        An override joins to grouped the figures that it counts per row
        apart, by ``date`` and the column of the row: joined first to the
        rows that a row counts, many-to-one, they would be repeated for each
        of them, and the database would group them all again."""
        return grouped

    @classmethod
    def _extend_rows(cls, grouped, figures, key, columns):
        """The query of grouped, with figures (a query grouped by key and
        date) LEFT joined on them, and columns (SQL of grouped and figures,
        each named) added"""
        condition = (getattr(figures, key) == getattr(grouped, key)) & (
            figures.date == grouped.date)
        return grouped.join(figures, 'LEFT', condition=condition).select(
            *(Column(grouped, c.output_name).as_(c.output_name)
                for c in grouped.columns),
            *columns)

    @classmethod
    def _joins(cls):
        """The FROM item of the query, the tables it joins by name and the
        WITH queries by name"""
        raise NotImplementedError

    @classmethod
    def _columns(cls, tables, withs):
        "The columns of the query, each named after its field"
        return [cls._column_id(tables, withs).as_('id'),
            cls._column_date(tables, withs)]

    @classmethod
    def _column_id(cls, tables, withs):
        raise NotImplementedError

    @classmethod
    def _column_date(cls, tables, withs):
        raise NotImplementedError

    @classmethod
    def _where(cls, tables, withs):
        return Literal(True)

    @classmethod
    def _group_by(cls, tables, withs):
        return [cls._column_date(tables, withs)]

    @classmethod
    def _period(cls):
        period = Transaction().context.get('period')
        return period if period in PERIODS else 'month'

    @classmethod
    def _date(cls, column):
        """The start of the period of column, named date

        The queries group by that name: the period is a parameter, and
        PostgreSQL does not take two parameters for the same expression."""
        return cls.date.sql_cast(
            DateTrunc(cls._period(), column)).as_('date')

    @classmethod
    def _where_date(cls, column):
        "Keep the rows whose column falls between the dates of the context"
        context = Transaction().context
        from_date = tools.as_date(context.get('from_date'))
        to_date = tools.as_date(context.get('to_date'))
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


def percent(string, **kwargs):
    """A field of the rate named as it without "_percent", in percent

    The graphs show the values of their fields as they are: the forms and
    the lists show the rates with a factor of 100 instead."""
    return fields.Function(
        fields.Float(string, digits=(3, 0), **kwargs), 'get_percent')


def rate(numerator, denominator):
    """The SQL of numerator / denominator rounded half up to 2 decimals as
    a float, 0 without a denominator

    In integers until the end: PostgreSQL rounds only numerics, and SQLite
    divides integers as integers."""
    hundredths = (numerator * 200 + denominator) / (denominator * 2)
    return Case(
        (denominator > 0, Cast(hundredths, 'FLOAT') / 100),
        else_=Literal(0.0))


class Scenario(Abstract):
    __name__ = 'marketing.automation.reporting.scenario'

    scenario = fields.Many2One(
        'marketing.automation.scenario', "Scenario")
    record_count = fields.Integer(
        "Records", help="The records that entered the scenario.")
    record_count_blocked = fields.Integer(
        "Records Blocked", help="Those of the records that are blocked.")
    block_rate = fields.Float("Block Rate", digits=(1, 2))
    block_rate_percent = percent("Block Rate (%)")

    @classmethod
    def _joins(cls):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        return record, {'record': record}, {}

    @classmethod
    def _column_id(cls, tables, withs):
        return Min(tables['record'].id)

    @classmethod
    def _column_date(cls, tables, withs):
        return cls._date(tables['record'].create_date)

    @classmethod
    def _columns(cls, tables, withs):
        record = tables['record']
        count = Count()
        blocked = Sum(Case((record.blocked, 1), else_=0))
        return super()._columns(tables, withs) + [
            record.scenario.as_('scenario'),
            count.as_('record_count'),
            blocked.as_('record_count_blocked'),
            rate(blocked, count).as_('block_rate'),
            ]

    @classmethod
    def _where(cls, tables, withs):
        record = tables['record']
        return (super()._where(tables, withs)
            & cls._where_date(record.create_date))

    @classmethod
    def _group_by(cls, tables, withs):
        return [tables['record'].scenario] + super()._group_by(
            tables, withs)

    def get_rec_name(self, name):
        return '%s @ %s' % (self.scenario.rec_name, self.date)


class Activity(Abstract):
    __name__ = 'marketing.automation.reporting.activity'

    _email_states = {
        'invisible': Eval('activity_action') != 'send_email',
        }

    activity = fields.Many2One(
        'marketing.automation.activity', "Activity")
    activity_action = fields.Selection(
        'get_activity_actions', "Activity Action")
    record_count = fields.Integer(
        "Records", help="The entries done.")
    email_sent = fields.Integer(
        "Emails Sent", states=_email_states,
        help="The emails that the mail server accepted.")
    email_opened = fields.Integer(
        "Emails Opened", states=_email_states,
        help="The emails sent that were opened or clicked.")
    email_clicked = fields.Integer(
        "Emails Clicked", states=_email_states,
        help="The emails sent that were clicked.")
    email_open_rate = fields.Float(
        "Email Open Rate", digits=(1, 2), states=_email_states,
        help="The emails opened per email sent.")
    email_click_rate = fields.Float(
        "Email Click Rate", digits=(1, 2), states=_email_states,
        help="The emails clicked per email sent.")
    email_click_through_rate = fields.Float(
        "Email Click-Through Rate", digits=(1, 2), states=_email_states,
        help="The emails clicked per email opened.")
    email_open_rate_percent = percent(
        "Email Open Rate (%)", states=_email_states)
    email_click_rate_percent = percent(
        "Email Click Rate (%)", states=_email_states)
    email_click_through_rate_percent = percent(
        "Email Click-Through Rate (%)", states=_email_states)

    del _email_states

    @classmethod
    def get_activity_actions(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        return Activity.get_actions()

    @classmethod
    def _joins(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        RecordActivity = pool.get('marketing.automation.record.activity')
        activity = Activity.__table__()
        record_activity = RecordActivity.__table__()
        from_item = record_activity.join(
            activity, condition=record_activity.activity == activity.id)
        return from_item, {
            'record_activity': record_activity,
            'activity': activity,
            }, {}

    @classmethod
    def _column_id(cls, tables, withs):
        return Min(tables['record_activity'].id)

    @classmethod
    def _column_date(cls, tables, withs):
        return cls._date(tables['record_activity'].at)

    @classmethod
    def _columns(cls, tables, withs):
        record_activity = tables['record_activity']
        activity = tables['activity']
        sent = record_activity.email_sent == Literal(True)
        # A click proves an open, even when the open was not reported.
        opened = sent & (
            (record_activity.email_opened == Literal(True))
            | (record_activity.email_clicked == Literal(True)))
        clicked = sent & (record_activity.email_clicked == Literal(True))
        sent_count = Sum(Case((sent, 1), else_=0))
        opened_count = Sum(Case((opened, 1), else_=0))
        clicked_count = Sum(Case((clicked, 1), else_=0))
        return super()._columns(tables, withs) + [
            activity.id.as_('activity'),
            activity.action.as_('activity_action'),
            Count().as_('record_count'),
            sent_count.as_('email_sent'),
            opened_count.as_('email_opened'),
            clicked_count.as_('email_clicked'),
            rate(opened_count, sent_count).as_('email_open_rate'),
            rate(clicked_count, sent_count).as_('email_click_rate'),
            rate(clicked_count, opened_count).as_(
                'email_click_through_rate'),
            ]

    @classmethod
    def _where(cls, tables, withs):
        record_activity = tables['record_activity']
        return (super()._where(tables, withs)
            & (record_activity.state == 'done')
            & cls._where_date(record_activity.at))

    @classmethod
    def _group_by(cls, tables, withs):
        activity = tables['activity']
        return [activity.id, activity.action] + super()._group_by(
            tables, withs)

    def get_rec_name(self, name):
        return '%s @ %s' % (self.activity.rec_name, self.date)
