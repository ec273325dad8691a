# SPDX-License-Identifier: GPL-3.0-or-later
"""The tag_party action: a marketer segments the parties by what they did.

A first scenario tags the parties who clicked its email; a second scenario,
whose domain picks the parties with that category, writes to them only.
The emails go to a real SMTP server and the click is a real HTTP request
to the tracked link."""
from urllib.parse import urlsplit

from trytond.model.exceptions import ValidationError
from trytond.pool import Pool
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from .tools import (
    Mail, SendingTestMixin, committed, create_parties, decide_events,
    human_request, inspecting, message)


class TagPartyTestCase(SendingTestMixin, TestCase):
    "Tagging the parties of a scenario with categories"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending()

    def create_category(self, name):
        with committed():
            Category = Pool().get('party.category')
            category, = Category.create([{'name': name}])
            return category.id

    def start_scenario(self, name, domain, activities):
        return self.running_scenario(name, domain, activities)

    def categories(self, party_id):
        with inspecting():
            Party = Pool().get('party.party')
            return sorted(c.name for c in Party(party_id).categories)

    def test_tag_the_clickers_and_write_to_them(self):
        "The parties tagged by one scenario enter another"
        ann, bob = create_parties("Ann", "Bob")
        clicked = self.create_category("Clicked the spring offer")
        self.start_scenario("Spring", [('id', 'in', [ann, bob])], [{
                    'name': "Spring offer",
                    'action': 'send_email',
                    'email_title': "Spring",
                    'email_template': (
                        '<p><a href="https://shop.example.com/spring">'
                        'See</a></p>'),
                    'children': [('create', [{
                                    'name': "Tag the clickers",
                                    'on': 'email_clicked',
                                    'action': 'tag_party',
                                    'party_categories': [
                                        ('add', [clicked])],
                                    }])],
                    }])
        self.run_crons()

        # Ann clicks the link of her email
        mail = Mail(self.smtp.to('ann@example.com')[0])
        link = urlsplit(mail.link("See"))
        response = human_request(self.client, link.path)
        self.assertEqual(response.status_code, 301)
        decide_events()
        self.run_crons()

        self.assertEqual(self.categories(ann), ["Clicked the spring offer"])
        self.assertEqual(self.categories(bob), [])
        with inspecting():
            Party = Pool().get('party.party')
            self.assertEqual(
                [p.id for p in Party.search([('categories', '=', clicked)])],
                [ann])

        # a scenario for the parties with the category
        self.smtp.clear()
        self.start_scenario(
            "Spring follow-up", [('categories', '=', clicked)], [{
                    'name': "Follow-up",
                    'action': 'send_email',
                    'email_title': "Still thinking about spring?",
                    'email_template': '<p>Our spring offer ends soon.</p>',
                    }])
        self.run_crons()
        self.assertEqual(
            [r for m in self.smtp.received() for r in m.rcpt_tos],
            ['ann@example.com'])

        # tagging twice adds the category once
        with committed():
            RecordActivity = Pool().get('marketing.automation.record.activity')
            RecordActivity.on_email_clicked(RecordActivity.search([
                        ('activity.name', '=', "Spring offer"),
                        ]))
        self.run_crons()
        with inspecting():
            PartyCategory = Pool().get('party.party-party.category')
            self.assertEqual(PartyCategory.search([
                        ('party', '=', ann), ('category', '=', clicked),
                        ], count=True), 1)
        self.assertEqual(self.categories(bob), ["Clicked the spring offer"])

    def test_remove_categories(self):
        "An activity removes categories from the parties"
        ann, bob = create_parties("Cid", "Dan")
        prospect = self.create_category("Prospect")
        loyal = self.create_category("Loyal")
        with committed():
            Party = Pool().get('party.party')
            Party.write(Party.browse([ann, bob]), {
                    'categories': [('add', [prospect, loyal])],
                    })
        self.start_scenario("Conversion", [('id', 'in', [ann, bob])], [{
                    'name': "No more a prospect",
                    'action': 'tag_party',
                    'party_categories': [('add', [prospect])],
                    'party_categories_remove': True,
                    }])

        self.run_crons()

        self.assertEqual(self.categories(ann), ["Loyal"])
        self.assertEqual(self.categories(bob), ["Loyal"])

    def test_categories_required(self):
        "An activity that tags with no category is refused on save"
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            with self.assertRaises(ValidationError) as raised:
                Scenario.create([{
                            'name': "Empty",
                            'activities': [('create', [{
                                            'name': "Tag",
                                            'action': 'tag_party',
                                            }])],
                            }])
            Transaction().rollback()
        self.assertIn("Tag", raised.exception.message)

    def test_marketing_user(self):
        "A user of the Marketing group builds a tagging activity"
        category = self.create_category("Newsletter reader")
        with committed(user=0):
            pool = Pool()
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            marketer, = User.create([{
                        'name': "Marketer", 'login': 'marketer_tag',
                        'groups': [('add', [ModelData.get_id(
                                        'marketing', 'group_marketing')])],
                        }])
        with committed(user=marketer.id, context={'_check_access': True}):
            Scenario = Pool().get('marketing.automation.scenario')
            scenario, = Scenario.create([{
                        'name': "Readers",
                        'activities': [('create', [{
                                        'name': "Tag the readers",
                                        'action': 'tag_party',
                                        'party_categories': [
                                            ('add', [category])],
                                        }])],
                        }])
            activity, = scenario.activities
            self.assertEqual(
                [c.name for c in activity.party_categories],
                ["Newsletter reader"])
            self.assertIn(
                'tag_party',
                dict(activity.fields_get(['action'])['action']['selection']))

    def test_no_party(self):
        "The message of an entry without a party reads well"
        self.assertTrue(message('msg_record_activity_no_party'))
