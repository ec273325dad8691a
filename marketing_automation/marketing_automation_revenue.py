# SPDX-License-Identifier: GPL-3.0-or-later
"""Revenue: the sales that the emails of the scenarios brought.

With the sale module, a sale is attributed when it is confirmed: for each
scenario, to the last email of the scenario that was clicked for the sale's
records before the confirmation, within the scenario's attribution window
(``Attribution.attribute``).  The records of a sale are those of its party,
and for a scenario on sales the sale itself
(``Sale.marketing_attribution_references`` in ``sale.py``).

The clicks are read through one method, ``RecordActivity.clicks``: by
default the time of the last click of each email, written when the click
fires its event.

The figures count the attributed sales that are confirmed, processing or
done: a sale cancelled later, or back to draft, stops counting.  The revenue
is the untaxed amount of the sale in the currency of its company, converted
at the date of the sale.  A scenario belongs to a company: a sale is
attributed to the scenarios of its company only, and every figure of a
scenario is that of its company, whatever company the context names, so
that the sales of another company never show and amounts in different
currencies are never added.
"""
import datetime
from collections import defaultdict
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from sql import Column, Literal, Null
from sql.aggregate import Count, Sum
from sql.conditionals import Case, Coalesce
from sql.functions import Round
from sql.operators import Exists

from trytond import backend
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, PYSONEncoder
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction
from trytond.wizard import StateAction, Wizard

from . import tools
from .marketing_automation_email import SEND_EMAIL

# The states of the sales that count: confirmed, and not cancelled since
COUNTED_STATES = ['confirmed', 'processing', 'done']
DEFAULT_WINDOW = datetime.timedelta(days=7)


def _timedelta(value):
    "A duration as the database gives it (seconds on SQLite)"
    if value is None or isinstance(value, datetime.timedelta):
        return value
    return datetime.timedelta(seconds=value)


def _datetime(value):
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


class Attribution(ModelSQL, ModelView):
    "A sale attributed to the last email of a scenario clicked before it"
    __name__ = 'marketing.automation.attribution'

    sale = fields.Many2One(
        'sale.sale', "Sale", required=True, ondelete='CASCADE',
        readonly=True)
    scenario = fields.Many2One(
        'marketing.automation.scenario', "Scenario", required=True,
        ondelete='CASCADE', readonly=True)
    activity = fields.Many2One(
        'marketing.automation.activity', "Activity", required=True,
        ondelete='CASCADE', readonly=True,
        help="The activity whose email was clicked last before the sale.")
    record = fields.Many2One(
        'marketing.automation.record', "Record", required=True,
        ondelete='CASCADE', readonly=True)
    record_activity = fields.Many2One(
        'marketing.automation.record.activity', "Record Activity",
        required=True, ondelete='CASCADE', readonly=True)
    clicked = fields.DateTime(
        "Clicked", readonly=True, help="When the email was clicked.")
    confirmed = fields.DateTime(
        "Confirmed", readonly=True, help="When the sale was confirmed.")
    company = fields.Many2One(
        'company.company', "Company", required=True, ondelete='CASCADE',
        readonly=True)
    currency = fields.Many2One(
        'currency.currency', "Currency", required=True, readonly=True)
    amount = Monetary(
        "Untaxed Amount", currency='currency', digits='currency',
        readonly=True,
        help="The untaxed amount of the sale in the currency of its "
        "company, empty when no rate converts it.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('sale_scenario_unique', Unique(t, t.sale, t.scenario),
                'marketing_automation.msg_attribution_sale_scenario_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.scenario, Index.Equality())),
                Index(t, (t.activity, Index.Equality())),
                Index(t, (t.record, Index.Equality())),
                Index(t, (t.record_activity, Index.Equality())),
                })
        cls._order.insert(0, ('confirmed', 'DESC'))

    def get_rec_name(self, name):
        return '%s @ %s' % (self.sale.rec_name, self.scenario.rec_name)

    @classmethod
    def attribute(cls, sales):
        """Attribute the sales, confirmed now, for each scenario of their
        company, to the last email of the scenario clicked for one of their
        records before now and within the scenario's attribution window

        What an earlier confirmation of the sales attributed is forgotten."""
        pool = Pool()
        Sale = pool.get('sale.sale')
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = cls.__table__()
        scenario = Scenario.__table__()
        record = Record.__table__()
        record_activity = RecordActivity.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        now = tools.now()

        sales = [s for s in Sale.browse([s.id for s in sales])
            if s.state in COUNTED_STATES]
        for sub in grouped_slice(sales, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.delete(
                    where=reduce_ids(table.sale, [s.id for s in sub])))
        sales_of = defaultdict(list)
        for sale in sales:
            for reference in sale.marketing_attribution_references():
                sales_of[reference].append(sale)
        if not sales_of:
            return

        clicks = RecordActivity.clicks()
        from_ = (clicks
            .join(record_activity,
                condition=clicks.record_activity == record_activity.id)
            .join(record, condition=record_activity.record == record.id)
            .join(scenario, condition=record.scenario == scenario.id))
        # the last click of each sale and scenario: (time, entry, activity,
        # record)
        last = {}
        for sub in grouped_slice(list(sales_of), backend.MAX_QUERY_PARAMS):
            cursor.execute(*from_.select(
                    record.record, record.scenario, scenario.company,
                    record.id, record_activity.id, record_activity.activity,
                    clicks.date, scenario.attribution_window,
                    where=record.record.in_(list(sub))
                    & (clicks.date <= now)))
            for (reference, scenario_id, company_id, record_id,
                    record_activity_id, activity_id, clicked,
                    window) in cursor:
                clicked = _datetime(clicked)
                window = _timedelta(window)
                if window is None or clicked < now - window:
                    continue
                click = (clicked, record_activity_id, activity_id, record_id)
                for sale in sales_of[reference]:
                    if sale.company.id != company_id:
                        continue
                    key = (sale.id, scenario_id)
                    if key not in last or click > last[key]:
                        last[key] = click
        if not last:
            return

        amounts = {s.id: s.marketing_company_amount() for s in sales}
        sale_of = {s.id: s for s in sales}
        rows = []
        for (sale_id, scenario_id), click in last.items():
            clicked, record_activity_id, activity_id, record_id = click
            sale = sale_of[sale_id]
            rows.append([
                    transaction.user, now, sale_id, scenario_id, activity_id,
                    record_id, record_activity_id, clicked, now,
                    sale.company.id, sale.company.currency.id,
                    amounts[sale_id]])
        columns = [table.create_uid, table.create_date, table.sale,
            table.scenario, table.activity, table.record,
            table.record_activity, table.clicked, table.confirmed,
            table.company, table.currency, table.amount]
        for sub in grouped_slice(rows, backend.MAX_QUERY_PARAMS // 20):
            cursor.execute(*table.insert(columns, list(sub)))

    @classmethod
    def counted(cls, table, sale):
        """The SQL condition that the attributions of table, joined to their
        sale, count in the figures of their scenario: the sale is still
        bought, and of the company of the scenario"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        scenario = Scenario.__table__()
        return sale.state.in_(COUNTED_STATES) & Exists(scenario.select(
                Literal(1),
                where=(scenario.id == table.scenario)
                & (scenario.company == table.company)))

    @classmethod
    def by(cls, field):
        """The query of the attributions that count, by field: field, the
        number of sales (sale_count) and their amount (revenue)"""
        pool = Pool()
        Sale = pool.get('sale.sale')
        table = cls.__table__()
        sale = Sale.__table__()
        column = getattr(table, field)
        return table.join(sale, condition=table.sale == sale.id).select(
            column.as_(field),
            Count().as_('sale_count'),
            Sum(table.amount).as_('revenue'),
            where=cls.counted(table, sale),
            group_by=[column])

    @classmethod
    def figures(cls, field, companies, names, sent):
        """The revenue figures of names for the records of field (scenario
        or activity), whose companies are companies ({id: company of the
        scenario or None}) and whose emails sent are sent ({id: count})"""
        cursor = Transaction().connection.cursor()
        ids = list(companies)
        counts = {i: (0, Decimal(0)) for i in ids}
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            query = cls.by(field)
            cursor.execute(*query.select(
                    getattr(query, field), query.sale_count,
                    cls.amount.sql_cast(query.revenue),
                    where=reduce_ids(getattr(query, field), list(sub))))
            for id_, count, revenue in cursor:
                counts[id_] = (count, Decimal(revenue or 0))
        result = {n: {} for n in names}
        for id_, (count, revenue) in counts.items():
            company = companies[id_]
            if company:
                currency = company.currency
                revenue = currency.round(revenue)
                per_email = (
                    currency.round(revenue / sent[id_]) if sent.get(id_)
                    else Decimal(0))
                values = {
                    'currency': currency.id,
                    'sale_count': count,
                    'revenue': revenue,
                    'revenue_per_email': per_email,
                    }
            else:
                values = dict.fromkeys(
                    ['currency', 'revenue', 'revenue_per_email'])
                values['sale_count'] = count
            for name in names:
                result[name][id_] = values[name]
        return result


def _revenue_columns(Model, sales, revenue, sent, digits):
    """The columns of the revenue of a reporting: the attributed sales and
    their revenue, whose emails sent are sent, rounded to the digits of the
    currency of the company of the scenario"""
    per_email = Case((sent > 0, revenue / sent), else_=Literal(0))
    return [
        Model.sale_count.sql_cast(sales).as_('sale_count'),
        Model.revenue.sql_cast(Round(revenue, digits)).as_('revenue'),
        Model.revenue_per_email.sql_cast(Round(per_email, digits)).as_(
            'revenue_per_email'),
        ]


def _scenario_currencies():
    """The query of the currency of the company of each scenario and its
    digits (columns scenario, currency and digits)"""
    pool = Pool()
    Scenario = pool.get('marketing.automation.scenario')
    Company = pool.get('company.company')
    Currency = pool.get('currency.currency')
    scenario = Scenario.__table__()
    company = Company.__table__()
    currency = Currency.__table__()
    return scenario.join(company, condition=scenario.company == company.id
        ).join(currency, condition=company.currency == currency.id
        ).select(
        scenario.id.as_('scenario'),
        currency.id.as_('currency'),
        currency.digits.as_('digits'))


def _period_end(date, period):
    "The first day after the period of the reporting that starts on date"
    return date + relativedelta(**{period + 's': 1})


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    attribution_window = fields.TimeDelta(
        "Attribution Window", required=True,
        domain=[('attribution_window', '>=', datetime.timedelta())],
        help="How long after a click on one of the emails of the scenario "
        "a sale of the record is attributed to the scenario.")
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"), 'get_revenue')
    sale_count = fields.Function(
        fields.Integer(
            "Attributed Sales",
            help="The sales attributed to the emails of the scenario."),
        'get_revenue')
    revenue = fields.Function(
        Monetary(
            "Revenue", currency='currency', digits='currency',
            help="The untaxed amount of the attributed sales, in the "
            "currency of the company."),
        'get_revenue')
    revenue_per_email = fields.Function(
        Monetary(
            "Revenue per Email Sent", currency='currency', digits='currency',
            help="The revenue per email that the mail server accepted."),
        'get_revenue')

    @classmethod
    def default_attribution_window(cls):
        return DEFAULT_WINDOW

    @classmethod
    def get_revenue(cls, scenarios, names):
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        ids = [s.id for s in scenarios]
        return Attribution.figures(
            'scenario', {s.id: s.company for s in scenarios}, names,
            cls.emails_sent(ids))

    @classmethod
    def emails_sent(cls, ids):
        "The number of emails sent to the records of each scenario of ids"
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        record = Record.__table__()
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        sent = {}
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record_activity.join(
                    record, condition=record_activity.record == record.id
                    ).select(
                    record.scenario, Count(),
                    where=reduce_ids(record.scenario, list(sub))
                    & (record_activity.state == 'done')
                    & (record_activity.email_sent == Literal(True)),
                    group_by=[record.scenario]))
            sent.update(cursor)
        return sent


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    _email_states = {
        'invisible': Eval('action') != SEND_EMAIL,
        }

    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"), 'get_revenue')
    sale_count = fields.Function(
        fields.Integer(
            "Attributed Sales", states=_email_states,
            help="The sales attributed to the email of the activity: its "
            "click was the last one of the scenario before the sale."),
        'get_revenue')
    revenue = fields.Function(
        Monetary(
            "Revenue", currency='currency', digits='currency',
            states=_email_states,
            help="The untaxed amount of the attributed sales, in the "
            "currency of the company."),
        'get_revenue')
    revenue_per_email = fields.Function(
        Monetary(
            "Revenue per Email Sent", currency='currency', digits='currency',
            states=_email_states,
            help="The revenue per email that the mail server accepted."),
        'get_revenue')

    del _email_states

    @classmethod
    def get_revenue(cls, activities, names):
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        sent = cls.get_email_statistics(activities, ['email_sent'])
        return Attribution.figures(
            'activity', {a.id: a.scenario.company for a in activities},
            names, sent['email_sent'])


class Record(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # the attribution finds the records of the sales by reference
        cls._sql_indexes.add(Index(t, (t.record, Index.Equality())))


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    email_last_clicked = fields.DateTime(
        "Email Last Clicked", readonly=True,
        states={
            'invisible': Eval('activity_action') != SEND_EMAIL,
            },
        help="When a link of the email was last clicked.")

    @classmethod
    def copy(cls, record_activities, default=None):
        default = default.copy() if default else {}
        default.setdefault('email_last_clicked', None)
        return super().copy(record_activities, default=default)

    @classmethod
    def on_events(cls, record_activities, events):
        super().on_events(record_activities, events)
        if 'email_clicked' in events:
            # every click, not only the first
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            now = tools.now()
            for sub in grouped_slice(
                    list(map(int, record_activities)),
                    backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        [table.email_last_clicked], [now],
                        where=reduce_ids(table.id, sub)
                        & (table.state == 'done')))

    @classmethod
    def clicks(cls):
        """The clicks that bring sales, as a query of rows (record_activity,
        date): by default the last click of each email sent

        Override it to read the clicks elsewhere, for example to keep only
        those that people made."""
        table = cls.__table__()
        return table.select(
            table.id.as_('record_activity'),
            table.email_last_clicked.as_('date'),
            where=(table.email_last_clicked != Null)
            & (table.email_sent == Literal(True)))


class _ReportingRevenue:
    """The revenue of the rows of a reporting

    The figures joined to the rows by _rows are loaded lazily: the search
    of the rows does not select them, and the database leaves out their
    joins, which cost most of the query."""
    __slots__ = ()

    sale_count = fields.Integer("Attributed Sales", loading='lazy')
    revenue = Monetary(
        "Revenue", currency='currency', digits='currency', loading='lazy',
        help="The untaxed amount of the attributed sales, in the currency "
        "of the company of the scenario.")
    revenue_per_email = Monetary(
        "Revenue per Email Sent", currency='currency', digits='currency',
        loading='lazy')
    currency = fields.Many2One('currency.currency', "Currency")

    def attributed_sales(self):
        "The ids of the sales that the row counts"
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        Sale = pool.get('sale.sale')
        attribution = Attribution.__table__()
        sale = Sale.__table__()
        cursor = Transaction().connection.cursor()
        from_, key, when, where = self._attributions(attribution)
        cursor.execute(*from_.join(
                sale, condition=attribution.sale == sale.id).select(
                attribution.sale,
                where=where & (key == getattr(self, key.name).id)
                & self._in_period(when)
                & Attribution.counted(attribution, sale)))
        return {s for s, in cursor}

    @classmethod
    def _with_currency(cls, grouped, key):
        """The query of grouped (rows by key and date) with the currency of
        the company of the scenario of each row, and its digits (columns
        currency and currency_digits)"""
        currencies = cls._currencies()
        return grouped.join(currencies, 'LEFT',
            condition=getattr(currencies, key) == getattr(grouped, key)
            ).select(
            *(Column(grouped, c.output_name).as_(c.output_name)
                for c in grouped.columns),
            cls.currency.sql_cast(currencies.currency).as_('currency'),
            currencies.digits.as_('currency_digits'))

    @classmethod
    def _currencies(cls):
        """The query of the currency of the company of the scenario (columns
        currency and digits) of each scenario (or activity)"""
        raise NotImplementedError

    @classmethod
    def _attributions(cls, attribution):
        """The attributions as the rows count them: the FROM item that joins
        attribution to the records (or entries) of the rows, the column of
        the row's scenario (or activity), the column whose period is the
        row's, and the condition that they count"""
        raise NotImplementedError

    @classmethod
    def _attributed(cls):
        """The query of the attributed sales (sale_count) and their revenue
        that count, by scenario (or activity) and period, between the dates
        of the context"""
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        Sale = pool.get('sale.sale')
        attribution = Attribution.__table__()
        sale = Sale.__table__()
        from_, key, when, where = cls._attributions(attribution)
        return from_.join(sale, condition=attribution.sale == sale.id).select(
            key.as_(key.name),
            cls._date(when),
            Count().as_('sale_count'),
            Sum(attribution.amount).as_('revenue'),
            where=where & Attribution.counted(attribution, sale)
            & cls._where_date(when),
            group_by=[key, cls._date(when)])

    def _in_period(self, column):
        "The SQL condition that column falls in the period of the row"
        start = datetime.datetime.combine(self.date, datetime.time())
        end = datetime.datetime.combine(
            _period_end(self.date, self._period()), datetime.time())
        return ((column >= start) & (column < end)
            & self._where_date(column))


class ReportingScenario(_ReportingRevenue, metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.scenario'

    email_sent = fields.Integer(
        "Emails Sent", loading='lazy',
        help="The emails that the mail server accepted for the records.")

    @classmethod
    def _rows(cls, grouped):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        grouped = super()._rows(grouped)
        record = Record.__table__()
        record_activity = RecordActivity.__table__()
        sent = record_activity.join(
            record, condition=record_activity.record == record.id).select(
            record.scenario.as_('scenario'),
            cls._date(record.create_date),
            Count().as_('email_sent'),
            where=(record_activity.state == 'done')
            & (record_activity.email_sent == Literal(True))
            & cls._where_date(record.create_date),
            group_by=[record.scenario, cls._date(record.create_date)])
        attributed = cls._attributed()
        with_sent = cls._with_currency(cls._extend_rows(
                grouped, sent, 'scenario', [
                    cls.email_sent.sql_cast(
                        Coalesce(sent.email_sent, 0)).as_('email_sent'),
                    ]), 'scenario')
        return cls._extend_rows(with_sent, attributed, 'scenario',
            _revenue_columns(cls, Coalesce(attributed.sale_count, 0),
                Coalesce(attributed.revenue, 0), with_sent.email_sent,
                with_sent.currency_digits))

    @classmethod
    def _currencies(cls):
        return _scenario_currencies()

    @classmethod
    def _attributions(cls, attribution):
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        return (
            attribution.join(
                record, condition=attribution.record == record.id),
            record.scenario, record.create_date, Literal(True))


class ReportingActivity(_ReportingRevenue, metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.activity'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        for name in ['sale_count', 'revenue', 'revenue_per_email']:
            getattr(cls, name).states = {
                'invisible': Eval('activity_action') != SEND_EMAIL,
                }

    @classmethod
    def _rows(cls, grouped):
        grouped = cls._with_currency(super()._rows(grouped), 'activity')
        attributed = cls._attributed()
        return cls._extend_rows(grouped, attributed, 'activity',
            _revenue_columns(cls, Coalesce(attributed.sale_count, 0),
                Coalesce(attributed.revenue, 0), grouped.email_sent,
                grouped.currency_digits))

    @classmethod
    def _currencies(cls):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        tree = Activity.scenario_tree()
        scenarios = _scenario_currencies()
        return tree.join(scenarios,
            condition=tree.scenario == scenarios.scenario).select(
            tree.activity.as_('activity'),
            scenarios.currency.as_('currency'),
            scenarios.digits.as_('digits'),
            with_=[tree])

    @classmethod
    def _attributions(cls, attribution):
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        record_activity = RecordActivity.__table__()
        return (
            attribution.join(record_activity,
                condition=attribution.record_activity == record_activity.id),
            record_activity.activity, record_activity.at,
            record_activity.state == 'done')


class ReportingOpenSales(Wizard):
    "Open the sales that rows of the reporting count"
    __name__ = 'marketing.automation.reporting.open_sales'
    start_state = 'open_'
    open_ = StateAction('sale.act_sale_form')

    def do_open_(self, action):
        sale_ids = set()
        for row in self.records:
            sale_ids |= row.attributed_sales()
        action['pyson_domain'] = PYSONEncoder().encode(
            [('id', 'in', sorted(sale_ids))])
        return action, {}
