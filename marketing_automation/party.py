# SPDX-License-Identifier: GPL-3.0-or-later
from sql import Cast, Literal, Null
from sql.functions import Function, Lower
from sql.operators import Concat

from trytond import backend
from trytond.model import ModelSQL, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import (
    Transaction, inactive_records, without_check_access)

from .marketing_automation import _random_hex
from .marketing_automation_window import TIMEZONES
from .mixin import MarketingAutomationMixin
from .web import RECORD_ACTIVITY


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


class Erase(metaclass=PoolMeta):
    """Erasing a party erases what the scenarios hold of it

    The rows that make the figures of the scenarios (the records, their
    entries and the flags of their emails) are kept, blanked and unlinked
    from the party; the rows that only serve the party (its messages, its
    tracked links, its requests, its unsubscriptions and its slots of the
    frequency cap) are deleted.  Each step is a few statements over the set
    of the party's records, and a classmethod that a module may extend."""
    __name__ = 'party.erase'

    def to_erase(self, party_id):
        pool = Pool()
        Party = pool.get('party.party')
        # The wizard only blanks columns of the rows it finds, while the
        # marketing of a party also has rows to delete: it is erased here,
        # as the wizard asks for each party it erases.
        self.erase_marketing([party_id])
        return super().to_erase(party_id) + [
            (Party, [('id', '=', party_id)], False,
                ['marketing_timezone'], [None]),
            ]

    @classmethod
    def erase_marketing(cls, party_ids):
        "Erase what the scenarios hold of the parties"
        record_ids = cls.marketing_records(party_ids)
        cls.erase_marketing_entries(record_ids)
        cls.erase_marketing_emails(record_ids, party_ids)
        cls.erase_marketing_tracking(record_ids)
        cls.erase_marketing_records(record_ids, party_ids)
        cls.erase_marketing_party(party_ids)

    @classmethod
    def marketing_records(cls, party_ids):
        """The ids of the marketing records whose marketing party is one of
        the parties: the parties themselves and the records of the other
        models of the scenarios (their sales)"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        varchar = transaction.database.sql_type('VARCHAR').base
        record_ids = []
        for model, _ in Scenario.get_models():
            Model = pool.get(model)
            # whatever the companies of the user who erases
            with inactive_records(), without_check_access():
                query = Model.search(
                    [('marketing_party', 'in', party_ids)],
                    order=[], query=True)
            cursor.execute(*record.select(
                    record.id,
                    where=record.record.in_(query.select(
                            Concat(model + ',', Cast(query.id, varchar))))))
            record_ids.extend(i for i, in cursor)
        return record_ids

    @classmethod
    def erase_marketing_entries(cls, record_ids):
        """Cancel the waiting entries of the records, so that no email goes
        to an erased party, and blank their errors, which may name it or its
        address"""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            RecordActivity.set_cancelled(
                lambda table: reduce_ids(table.record, sub))
            cursor.execute(*table.update(
                    [table.error], [Null],
                    where=reduce_ids(table.record, sub)
                    & (table.error != Null)))

    @classmethod
    def erase_marketing_emails(cls, record_ids, party_ids):
        """Delete the messages of the records from the outbox and blank the
        emails logged for them: recipients, subject, body and Message-ID
        (which holds the UUID of the record); the log keeps that an email
        was sent, by which activity, and the emails logged on a party are
        logged on its marketing record instead"""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Email = pool.get('marketing.automation.email')
        IrEmail = pool.get('ir.email')
        Address = pool.get('ir.email.address')
        record_activity = RecordActivity.__table__()
        email = Email.__table__()
        ir_email = IrEmail.__table__()
        address = Address.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        varchar = transaction.database.sql_type('VARCHAR').base
        parties = ['party.party,%s' % i for i in party_ids]
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            logged = reduce_ids(ir_email.marketing_automation_record, sub)
            cursor.execute(*email.delete(
                    where=email.record_activity.in_(record_activity.select(
                            record_activity.id,
                            where=reduce_ids(record_activity.record, sub)))))
            cursor.execute(*address.delete(
                    where=address.email.in_(ir_email.select(
                            ir_email.id, where=logged))))
            cursor.execute(*ir_email.update(
                    [ir_email.recipients, ir_email.recipients_secondary,
                        ir_email.recipients_hidden, ir_email.subject,
                        ir_email.body, ir_email.message_id],
                    [Null] * 6,
                    where=logged))
            cursor.execute(*ir_email.update(
                    [ir_email.resource],
                    [Concat('marketing.automation.record,',
                            Cast(ir_email.marketing_automation_record,
                                varchar))],
                    where=logged & ir_email.resource.in_(parties)))

    @classmethod
    def erase_marketing_tracking(cls, record_ids):
        """Delete the requests of the records' emails from the event ledger,
        and their tracked links (whose targets may carry personal data) with
        their visits; the old links then lead nowhere"""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Event = pool.get('marketing.automation.event')
        ShortenedURL = pool.get('web.shortened_url')
        URLAccess = pool.get('web.shortened_url.access')
        record_activity = RecordActivity.__table__()
        event = Event.__table__()
        url = ShortenedURL.__table__()
        access = URLAccess.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        varchar = transaction.database.sql_type('VARCHAR').base
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            entries = reduce_ids(record_activity.record, list(sub))
            cursor.execute(*event.delete(
                    where=event.record_activity.in_(record_activity.select(
                            record_activity.id, where=entries))))
            links = url.record.in_(record_activity.select(
                    Concat(RECORD_ACTIVITY + ',',
                        Cast(record_activity.id, varchar)),
                    where=entries))
            cursor.execute(*access.delete(
                    where=access.url.in_(url.select(url.id, where=links))))
            cursor.execute(*url.delete(where=links))

    @classmethod
    def erase_marketing_records(cls, record_ids, party_ids):
        """Give the records a new UUID, so that the unsubscribe links of the
        emails sent lead nowhere, and unlink from the parties the records
        of the parties themselves: their reference keeps the model, with a
        negative id of their own, as a removed record does"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        varchar = transaction.database.sql_type('VARCHAR').base
        parties = ['party.party,%s' % i for i in party_ids]
        for sub in grouped_slice(record_ids, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            cursor.execute(*record.update(
                    [record.uuid], [_new_uuid()],
                    where=reduce_ids(record.id, sub)))
            cursor.execute(*record.update(
                    [record.record],
                    [Concat('party.party,-', Cast(record.id, varchar))],
                    where=reduce_ids(record.id, sub)
                    & record.record.in_(parties)))

    @classmethod
    def erase_marketing_party(cls, party_ids):
        """Delete the unsubscriptions of the parties and their rows of the
        frequency cap, which serve only their next emails"""
        pool = Pool()
        Unsubscribed = pool.get(
            'party.party-unsubscribed-marketing.automation.scenario')
        CapParty = pool.get('marketing.automation.cap.party')
        CapSlot = pool.get('marketing.automation.cap.slot')
        cursor = Transaction().connection.cursor()
        for Model in [Unsubscribed, CapParty, CapSlot]:
            table = Model.__table__()
            for sub in grouped_slice(party_ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.delete(
                        where=reduce_ids(table.party, list(sub))))


class _RandomBlob(Function):
    __slots__ = ()
    _function = 'RANDOMBLOB'


class _Hex(Function):
    __slots__ = ()
    _function = 'HEX'


def _new_uuid():
    "The SQL expression of a new random UUID in hexadecimal for each row"
    return _random_hex() or Lower(_Hex(_RandomBlob(Literal(16))))
