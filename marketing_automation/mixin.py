# SPDX-License-Identifier: GPL-3.0-or-later
"The public mixin that makes a model usable in marketing scenarios."
from trytond.model import fields


class MarketingAutomationMixin:
    """Inherit it to let marketers build scenarios over a model.

    ``marketing_party`` tells who receives the emails of a record, in which
    language and at which address; ``marketing_access_context`` tells under
    which groups (and company) the email templates may read the record.
    ``marketing_audience`` tells whether the scenario of the context
    (``marketing_scenario``) would reach the record, and finds the records
    it reaches or not.
    """
    __slots__ = ()

    marketing_party = fields.Function(
        fields.Many2One('party.party', "Marketing Party"),
        'get_marketing_party', searcher='search_marketing_party')
    marketing_audience = fields.Function(
        fields.Selection([
                (None, ""),
                ('reachable', "Reachable"),
                ('no_email', "No Email Address"),
                ('unsubscribed', "Unsubscribed or Blocked"),
                ], "Marketing Audience",
            help="Whether the scenario of the context reaches the record."),
        'get_marketing_audience', searcher='search_marketing_audience')

    def get_marketing_party(self, name):
        raise NotImplementedError

    @classmethod
    def search_marketing_party(cls, name, clause):
        raise NotImplementedError

    @classmethod
    def get_marketing_audience(cls, records, name):
        from trytond.pool import Pool
        Scenario = Pool().get('marketing.automation.scenario')
        return Scenario.audience_of(cls, records)

    @classmethod
    def search_marketing_audience(cls, name, clause):
        from trytond.pool import Pool
        Scenario = Pool().get('marketing.automation.scenario')
        return Scenario.audience_domain(cls, clause)

    @property
    def marketing_access_context(self):
        "The context under which templates read the record"
        from trytond.pool import Pool
        ModelData = Pool().get('ir.model.data')
        return {
            '_groups': (ModelData.get_id('marketing', 'group_marketing'),),
            }
