# SPDX-License-Identifier: GPL-3.0-or-later
"""Who a scenario will reach: the records its domain selects now, those of
them that are out of it (unsubscribed or blocked), without an email address,
or reachable.

The counts are shown on the scenario (``audience_*``, and its
``record_count`` in draft); the same conditions
(``Scenario.audience_conditions``) give each record of a model of scenarios
its ``marketing_audience`` in the scenario of the context (see
``mixin.py``), and the actions that list them.
"""
from sql import Cast, Literal
from sql.aggregate import Count, Sum
from sql.conditionals import Case
from sql.functions import Substring
from sql.operators import Like, Or

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, PYSONEncoder
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction, check_access

from . import tools
from .tools import contained, savepoint

AUDIENCE = ['reachable', 'no_email', 'unsubscribed']


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    audience_error = fields.Function(
        fields.Text(
            "Not Counted",
            states={
                'invisible': ~Eval('audience_error'),
                },
            help="Why the records of the domain cannot be counted with the "
            "rights of its author."),
        'get_audience_error')
    audience_selected = fields.Function(
        fields.Integer(
            "Selected", help="How many records the domain selects now."),
        'get_audience')
    audience_unsubscribed = fields.Function(
        fields.Integer(
            "Unsubscribed or Blocked",
            help="How many of them are blocked in the scenario, or "
            "unsubscribed from it."),
        'get_audience')
    audience_no_email = fields.Function(
        fields.Integer(
            "No Email Address",
            help="How many of the others have no email address."),
        'get_audience')
    audience_reachable = fields.Function(
        fields.Integer(
            "Reachable",
            help="How many of them the emails of the scenario will reach."),
        'get_audience')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'open_audience_%s' % kind: {
                    'invisible': Eval('state') == 'stopped',
                    'depends': ['state'],
                    }
                for kind in ['selected'] + AUDIENCE})

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//page[@id="audience"]', 'states', {
                    'invisible': Eval('state') == 'stopped',
                    }),
            ]

    def audience_count(self):
        """How many records the domain selects now among those its author
        may read, None if it cannot tell (audience_error tells why)"""
        cursor = Transaction().connection.cursor()
        savepoint(cursor, 'marketing_audience')
        try:
            Model = Pool().get(self.model)
            with self.as_author():
                count = Model.search(self.decoded_domain(), count=True)
        except Exception:
            # a domain that fails in the database must not break the
            # transaction of whoever reads the count
            cursor.execute('ROLLBACK TO SAVEPOINT marketing_audience')
            return None
        cursor.execute('RELEASE SAVEPOINT marketing_audience')
        return count

    def get_audience_error(self, name):
        """Why the domain cannot select records with the rights of its
        author: a model or a field they may not read

        The query is made, not run: the rights are checked before."""
        if self.state == 'stopped':
            return None
        try:
            Model = Pool().get(self.model)
            with self.as_author():
                Model.search(self.decoded_domain(), order=[], query=True)
        except Exception as exception:
            return gettext(
                'marketing_automation.msg_scenario_audience_refused',
                scenario=self.rec_name, author=self.author_name(),
                error=tools.describe(exception))

    def audience_conditions(self, table):
        """The SQL conditions on table, of the scenario's model, that a
        record is selected by the domain, is out of the scenario
        (unsubscribed from it or blocked in it) and has an email address

        The records are those that the author of the domain may search."""
        with self.as_author():
            return self._audience_conditions(table)

    def _audience_conditions(self, table):
        pool = Pool()
        Model = pool.get(self.model)
        Record = pool.get('marketing.automation.record')
        Unsubscribed = pool.get(
            'party.party-unsubscribed-marketing.automation.scenario')
        ContactMechanism = pool.get('party.contact_mechanism')
        record = Record.__table__()
        unsubscribed = Unsubscribed.__table__()
        mechanism = ContactMechanism.__table__()
        database = Transaction().database

        selected = Model.search(self.decoded_domain(), order=[], query=True)
        # as the email finds its address (party_recipients)
        with_email = Model.search([
                ('marketing_party', 'in', mechanism.select(
                        mechanism.party,
                        where=(mechanism.type == 'email')
                        & (mechanism.active == Literal(True))
                        & (mechanism.value != ''))),
                ], order=[], query=True)
        prefix = self.model + ','
        out = [('id', 'in', record.select(
                    Cast(Substring(record.record, len(prefix) + 1),
                        database.sql_type('INTEGER').base),
                    where=(record.scenario == self.id)
                    & (record.blocked == Literal(True))
                    & Like(record.record, prefix + '%')))]
        if self.unsubscribable:
            out.append(('marketing_party', 'in', unsubscribed.select(
                        unsubscribed.party,
                        where=unsubscribed.scenario == self.id)))
        out = Model.search(['OR', *out], order=[], query=True)
        return (
            table.id.in_(selected), table.id.in_(out),
            table.id.in_(with_email))

    @classmethod
    def get_audience(cls, scenarios, names):
        result = {n: {} for n in names}
        for scenario in scenarios:
            # nobody is reached from a stopped scenario
            counts = (
                scenario.audience_counts() if scenario.state != 'stopped'
                else None)
            for name in names:
                result[name][scenario.id] = (
                    counts[name[len('audience_'):]] if counts else None)
        return result

    def audience_counts(self):
        """The counts of the audience, in one statement: the records the
        domain selects, and those of them that are unsubscribed (or
        blocked), without an email address or reachable; None when the
        domain fails"""
        Model = Pool().get(self.model)
        table = Model.__table__()
        cursor = Transaction().connection.cursor()
        counts = []

        def count():
            selected, out, with_email = self.audience_conditions(table)
            cursor.execute(*table.select(
                    Count(),
                    Sum(Case((out, 1), else_=0)),
                    Sum(Case((~out & ~with_email, 1), else_=0)),
                    where=selected))
            counts.extend(cursor.fetchone())
        # a domain that fails in the database must not break the form
        if contained(count) is not None:
            return None
        selected, out, no_email = [c or 0 for c in counts]
        return {
            'selected': selected,
            'unsubscribed': out,
            'no_email': no_email,
            'reachable': selected - out - no_email,
            }

    @classmethod
    def _audience_scenario(cls, Model):
        """The scenario of the context on Model, None if there is none or
        if the record rules of the user hide it

        The rules are applied even where trytond leaves them out (in the
        searchers of fields): the scenario of another company must tell
        nothing."""
        pool = Pool()
        Rule = pool.get('ir.rule')
        scenario_id = Transaction().context.get('marketing_scenario')
        if isinstance(scenario_id, int) and not isinstance(
                scenario_id, bool):
            with check_access():
                rules = Rule.domain_get(cls.__name__, mode='read')
            scenarios = cls.search([
                    ('id', '=', scenario_id),
                    ('model', '=', Model.__name__),
                    rules,
                    ], limit=1)
            if scenarios:
                return scenarios[0]

    @classmethod
    def audience_of(cls, Model, records):
        """The audience of the scenario of the context to which each record
        of Model belongs"""
        result = {r.id: None for r in records}
        scenario = cls._audience_scenario(Model)
        if scenario is None:
            return result
        table = Model.__table__()
        cursor = Transaction().connection.cursor()
        selected, out, with_email = scenario.audience_conditions(table)
        for sub in grouped_slice(list(result)):
            cursor.execute(*table.select(
                    table.id,
                    Case((out, 'unsubscribed'), (~with_email, 'no_email'),
                        else_='reachable'),
                    where=reduce_ids(table.id, list(sub)) & selected))
            result.update(cursor)
        return result

    @classmethod
    def audience_domain(cls, Model, clause):
        """The domain of the records of Model whose audience in the scenario
        of the context matches clause"""
        _, operator, value = clause[:3]
        kinds = {None, *AUDIENCE}
        if operator in {'=', '!='}:
            given = {value}
        elif operator in {'in', 'not in'}:
            given = set(value or [])
        else:
            raise ValueError(f"Unsupported operator: {operator!r}")
        wanted = given if operator in {'=', 'in'} else kinds - given
        scenario = cls._audience_scenario(Model)
        if scenario is None:
            # no record is in the audience of no scenario
            return [] if None in wanted else [('id', '=', None)]
        table = Model.__table__()
        selected, out, with_email = scenario.audience_conditions(table)
        conditions = {
            None: ~selected,
            'unsubscribed': selected & out,
            'no_email': selected & ~out & ~with_email,
            'reachable': selected & ~out & with_email,
            }
        wanted = [conditions[k] for k in conditions if k in wanted]
        if not wanted:
            return [('id', '=', None)]
        return [('id', 'in', table.select(table.id, where=Or(wanted)))]

    @classmethod
    @ModelView.button_action('marketing_automation.act_audience')
    def open_audience_selected(cls, scenarios):
        return cls._audience_action(scenarios, None)

    @classmethod
    @ModelView.button_action('marketing_automation.act_audience')
    def open_audience_unsubscribed(cls, scenarios):
        return cls._audience_action(scenarios, 'unsubscribed')

    @classmethod
    @ModelView.button_action('marketing_automation.act_audience')
    def open_audience_no_email(cls, scenarios):
        return cls._audience_action(scenarios, 'no_email')

    @classmethod
    @ModelView.button_action('marketing_automation.act_audience')
    def open_audience_reachable(cls, scenarios):
        return cls._audience_action(scenarios, 'reachable')

    @classmethod
    def _audience_action(cls, scenarios, kind):
        "The action that lists the records of the audience of kind"
        if not scenarios:
            return
        scenario = scenarios[0]
        name = 'audience_%s' % (kind or 'selected')
        if kind:
            domain = [('marketing_audience', '=', kind)]
        else:
            domain = [('marketing_audience', '!=', None)]
        encoder = PYSONEncoder()
        return {
            'res_model': scenario.model,
            # the client adds the name of the scenario
            'name': cls.fields_get([name])[name]['string'],
            'pyson_domain': encoder.encode(domain),
            'pyson_context': encoder.encode({
                    'marketing_scenario': scenario.id,
                    }),
            }
