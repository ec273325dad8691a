# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.pool import PoolMeta

from .mixin import MarketingAutomationMixin


class Sale(MarketingAutomationMixin, metaclass=PoolMeta):
    __name__ = 'sale.sale'

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
