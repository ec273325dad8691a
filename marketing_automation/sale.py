# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.model import fields
from trytond.modules.currency.exceptions import RateError
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction, check_access

from .mixin import MarketingAutomationMixin


def _search_through(Target, field, name, clause):
    """The domain of the records whose ids are in the column field of the
    records of Target that match the nested clause of the Function field
    name

    Among the records of Target that the record rules of the user let them
    read: trytond leaves the rules out of the searchers of fields, and a
    search through the sales of the parties must not find those of another
    company."""
    pool = Pool()
    Rule = pool.get('ir.rule')
    target = Target.__table__()
    if clause[1] == 'where':
        domain = clause[2]
    else:
        nested = clause[0][len(name) + 1:] or 'id'
        domain = [(nested, *clause[1:])]
    with check_access():
        rules = Rule.domain_get(Target.__name__, mode='read')
    query = Target.search([domain, rules], order=[], query=True)
    return [('id', 'in', target.select(
                getattr(target, field), where=target.id.in_(query)))]


class Sale(MarketingAutomationMixin, metaclass=PoolMeta):
    __name__ = 'sale.sale'

    marketing_attributions = fields.Function(fields.Many2Many(
            'marketing.automation.attribution', None, None,
            "Marketing Attributions",
            help="The scenarios whose emails brought the sale."),
        'get_marketing_attributions',
        searcher='search_marketing_attributions')

    def get_marketing_party(self, name):
        return self.party.id if self.party else None

    @classmethod
    def search_marketing_party(cls, name, clause):
        nested = clause[0][len(name):]
        return [('party' + nested, *clause[1:])]

    @property
    def marketing_access_context(self):
        context = super().marketing_access_context
        context['company'] = self.company.id if self.company else None
        return context

    @classmethod
    def get_marketing_attributions(cls, sales, name):
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        attributions = {s.id: [] for s in sales}
        for attribution in Attribution.search(
                [('sale', 'in', list(attributions))], order=[('id', 'ASC')]):
            attributions[attribution.sale.id].append(attribution.id)
        return attributions

    @classmethod
    def search_marketing_attributions(cls, name, clause):
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        return _search_through(Attribution, 'sale', name, clause)

    @classmethod
    def confirm(cls, sales):
        pool = Pool()
        Attribution = pool.get('marketing.automation.attribution')
        confirming = [
            s for s in sales if (s.state, 'confirmed') in cls._transitions]
        super().confirm(sales)
        Attribution.attribute(confirming)

    def marketing_attribution_references(self):
        """The references of the marketing records whose emails may have
        brought the sale: the sale itself and its party"""
        references = [str(self)]
        if self.party:
            references.append(str(self.party))
        return references

    def marketing_company_amount(self):
        """The untaxed amount in the currency of the company, at the rate of
        the date of the sale, or None without a rate"""
        pool = Pool()
        Currency = pool.get('currency.currency')
        with Transaction().set_context(date=self.sale_date):
            try:
                return Currency.compute(
                    self.currency, self.untaxed_amount,
                    self.company.currency)
            except RateError:
                return None


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'

    marketing_sales = fields.Function(fields.Many2Many(
            'sale.sale', None, None, "Sales",
            help="The sales of the party, for the goals of the marketing "
            "scenarios."),
        'get_marketing_sales', searcher='search_marketing_sales')

    @classmethod
    def get_marketing_sales(cls, parties, name):
        pool = Pool()
        Sale = pool.get('sale.sale')
        sales = {p.id: [] for p in parties}
        for sale in Sale.search(
                [('party', 'in', list(sales))], order=[('id', 'ASC')]):
            sales[sale.party.id].append(sale.id)
        return sales

    @classmethod
    def search_marketing_sales(cls, name, clause):
        pool = Pool()
        Sale = pool.get('sale.sale')
        return _search_through(Sale, 'party', name, clause)
