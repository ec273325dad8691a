# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenarios of companies: with the company module, a scenario belongs to a
company.

The company rules of the scenario (company.xml) are those of its
activities, records, entries and reportings too (``__access__``), and its
author's work (the domain, the goal, the conditions, the counts and the
reads of the templates) sees the records of that company only
(``Scenario.author_context``).
"""
from sql import Null

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    company = fields.Many2One(
        'company.company', "Company", required=True,
        states={
            'readonly': Eval('state') != 'draft',
            },
        help="The company of the scenario: only its users see it, and its "
        "domain selects only the records of this company.")

    @classmethod
    def __register__(cls, module):
        pool = Pool()
        Company = pool.get('company.company')
        table = cls.__table__()
        company = Company.__table__()
        cursor = Transaction().connection.cursor()
        table_h = cls.__table_handler__(module)
        if not table_h.column_exist('company'):
            table_h.add_column('company', cls.company._sql_type)
        # The scenarios made before the company module was activated (or
        # by Tryton's own module) belong to the only company.  With
        # several, an administrator chooses (doc/usage.rst): nobody sees
        # them until then.
        cursor.execute(*company.select(company.id, limit=2))
        companies = [i for i, in cursor]
        if len(companies) == 1:
            cursor.execute(*table.update(
                    [table.company], [companies[0]],
                    where=table.company == Null))
        super().__register__(module)

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def _authored_fields(cls):
        return super()._authored_fields() | {'company'}

    def author_context(self, user_id):
        # The rules of the companies see the scenario's company alone, and
        # none unless its author may work for it: whatever company they
        # chose in their preferences.
        pool = Pool()
        UserCompany = pool.get('res.user-company.company')
        user_company = UserCompany.__table__()
        cursor = Transaction().connection.cursor()
        context = super().author_context(user_id)
        company_id = self.company.id if self.company else None
        cursor.execute(*user_company.select(
                user_company.id,
                where=(user_company.user == user_id)
                & (user_company.company == company_id),
                limit=1))
        context['company'] = company_id
        context['_companies'] = (company_id,) if cursor.fetchone() else ()
        return context
