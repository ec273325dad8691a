# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.model import ModelSQL, fields
from trytond.pool import PoolMeta

from .marketing_automation_window import TIMEZONES
from .mixin import MarketingAutomationMixin


class Party(MarketingAutomationMixin, metaclass=PoolMeta):
    __name__ = 'party.party'

    marketing_scenario_unsubscribed = fields.Many2Many(
        'party.party-unsubscribed-marketing.automation.scenario',
        'party', 'scenario', "Unsubscribed Scenarios",
        help="The scenarios this party does not want to receive emails of.")
    marketing_timezone = fields.Selection(
        TIMEZONES, "Time Zone", translate=False,
        help="The time zone in which the send windows of the scenarios "
        "open for this party.")

    def get_marketing_party(self, name):
        return self.id

    @classmethod
    def search_marketing_party(cls, name, clause):
        nested = clause[0][len(name):]
        return [('id' + nested, *clause[1:])]


class PartyUnsubscribedScenario(ModelSQL):
    __name__ = 'party.party-unsubscribed-marketing.automation.scenario'

    party = fields.Many2One(
        'party.party', "Party", required=True, ondelete='CASCADE')
    scenario = fields.Many2One(
        'marketing.automation.scenario', "Scenario",
        required=True, ondelete='CASCADE')
