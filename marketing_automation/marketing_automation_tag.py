# SPDX-License-Identifier: GPL-3.0-or-later
"""The tag_party action: add categories to the party of each record (or
remove them), so that a marketer segments the parties by what they did.

It plugs into the activity as any action does (see ``Activity`` in
``marketing_automation.py``), and works set-based: one statement per
category and batch.  It produces no event.
"""
from sql import Literal
from sql.operators import Exists

from trytond.i18n import gettext
from trytond.model import ModelSQL, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import tools
from .engine import Outcome, marketing_parties
from .exceptions import ActivityError
from .tools import batch_size

TAG_PARTY = 'tag_party'


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    party_categories = fields.Many2Many(
        'marketing.automation.activity-party.category',
        'activity', 'category', "Party Categories",
        states={
            'invisible': Eval('action') != TAG_PARTY,
            'required': Eval('action') == TAG_PARTY,
            },
        help="The categories added to the party of each record.")
    party_categories_remove = fields.Boolean(
        "Remove Categories",
        states={
            'invisible': Eval('action') != TAG_PARTY,
            },
        help="Remove the categories from the party instead of adding them.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.action.selection.append((TAG_PARTY, "Tag Party"))

    @classmethod
    def default_party_categories_remove(cls):
        return False

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('//page[@id="party_categories"]', 'states', {
                    'invisible': Eval('action') != TAG_PARTY,
                    }),
            ]

    def check_tag_party(self, field_names=None):
        if field_names is not None and not field_names & {
                'action', 'party_categories'}:
            return
        if not self.party_categories:
            raise ActivityError(gettext(
                    'marketing_automation.msg_activity_tag_party_categories',
                    activity=self.rec_name))

    def execute_tag_party_batch(self, entries, records):
        """Add the categories to the marketing parties of the records, or
        remove them; an entry whose record has no party gets its error"""
        parties = marketing_parties(records.values())
        errors = {}
        party_ids = set()
        for entry in entries:
            party_id = parties.get(records[entry.id])
            if party_id is None:
                errors[entry.id] = gettext(
                    'marketing_automation.msg_record_activity_no_party')
            else:
                party_ids.add(party_id)
        category_ids = [c.id for c in self.party_categories]
        for sub in grouped_slice(sorted(party_ids), batch_size()):
            if self.party_categories_remove:
                _remove_categories(list(sub), category_ids)
            else:
                _add_categories(list(sub), category_ids)
        return Outcome(errors, set())


def _add_categories(party_ids, category_ids):
    "Give the categories to the parties that do not have them yet"
    pool = Pool()
    Party = pool.get('party.party')
    PartyCategory = pool.get('party.party-party.category')
    party = Party.__table__()
    relation = PartyCategory.__table__()
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    now = tools.now()
    for category_id in category_ids:
        has_it = Exists(relation.select(
                Literal(1),
                where=(relation.party == party.id)
                & (relation.category == category_id)))
        cursor.execute(*relation.insert(
                [relation.create_uid, relation.create_date,
                    relation.party, relation.category],
                party.select(
                    Literal(transaction.user), Literal(now), party.id,
                    Literal(category_id),
                    where=reduce_ids(party.id, party_ids) & ~has_it)))


def _remove_categories(party_ids, category_ids):
    pool = Pool()
    PartyCategory = pool.get('party.party-party.category')
    relation = PartyCategory.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*relation.delete(
            where=reduce_ids(relation.party, party_ids)
            & reduce_ids(relation.category, category_ids)))


class ActivityPartyCategory(ModelSQL):
    "The categories that a tag_party activity adds or removes"
    __name__ = 'marketing.automation.activity-party.category'

    activity = fields.Many2One(
        'marketing.automation.activity', "Activity",
        required=True, ondelete='CASCADE')
    category = fields.Many2One(
        'party.category', "Category", required=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('activity')
