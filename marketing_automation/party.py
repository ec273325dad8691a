# SPDX-License-Identifier: GPL-3.0-or-later
import json
import re

from sql import Cast, Literal, Null
from sql.functions import Function, Lower
from sql.operators import Concat, Like, Or

from trytond import backend
from trytond.model import ModelSQL, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import (
    Transaction, inactive_records, without_check_access)

from . import tools
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
    frequency cap) are deleted.  What is not linked to the party but may
    hold a copy of its name or address (the logs of the test emails, the
    faults of the scenarios and activities, the previews left open) is
    found by them.  Each step is a few statements over the set of the
    party's records, and a classmethod that a module may extend."""
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
        cls.erase_marketing_tests(party_ids)
        cls.erase_marketing_tracking(record_ids)
        cls.erase_marketing_records(record_ids, party_ids)
        cls.erase_marketing_faults(party_ids)
        cls.erase_marketing_previews(party_ids)
        cls.erase_marketing_party(party_ids)

    @classmethod
    def marketing_references(cls, party_ids):
        """The queries of the references ('model,id') of the records of each
        model of the scenarios whose marketing party is one of the parties:
        the parties themselves and the records of the other models (their
        sales)"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        varchar = Transaction().database.sql_type('VARCHAR').base
        queries = []
        for model, _ in Scenario.get_models():
            Model = pool.get(model)
            # whatever the companies of the user who erases
            with inactive_records(), without_check_access():
                query = Model.search(
                    [('marketing_party', 'in', party_ids)],
                    order=[], query=True)
            queries.append(query.select(
                    Concat(model + ',', Cast(query.id, varchar))))
        return queries

    @classmethod
    def marketing_records(cls, party_ids):
        """The ids of the marketing records whose marketing party is one of
        the parties"""
        pool = Pool()
        Record = pool.get('marketing.automation.record')
        record = Record.__table__()
        cursor = Transaction().connection.cursor()
        record_ids = []
        for references in cls.marketing_references(party_ids):
            cursor.execute(*record.select(
                    record.id, where=record.record.in_(references)))
            record_ids.extend(i for i, in cursor)
        return record_ids

    @classmethod
    def marketing_addresses(cls, party_ids):
        """The email addresses of the parties, in lower case, those of
        their inactive contact mechanisms too"""
        pool = Pool()
        ContactMechanism = pool.get('party.contact_mechanism')
        mechanism = ContactMechanism.__table__()
        cursor = Transaction().connection.cursor()
        addresses = set()
        for sub in grouped_slice(party_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*mechanism.select(
                    mechanism.value,
                    where=reduce_ids(mechanism.party, list(sub))
                    & (mechanism.type == 'email')))
            addresses.update(
                v.strip().lower() for v, in cursor if v and v.strip())
        return addresses

    @classmethod
    def marketing_traces(cls, party_ids):
        """What may be written of the parties where nothing links to them,
        in lower case: their names and their email addresses"""
        pool = Pool()
        Party = pool.get('party.party')
        party = Party.__table__()
        cursor = Transaction().connection.cursor()
        traces = cls.marketing_addresses(party_ids)
        for sub in grouped_slice(party_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*party.select(
                    party.name, where=reduce_ids(party.id, list(sub))))
            traces.update(
                n.strip().lower() for n, in cursor if n and n.strip())
        return traces

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
    def erase_marketing_tests(cls, party_ids):
        """Blank the logs of the test emails sent to an address of the
        parties (whatever its case), and of the emails of the scenarios
        whose record is gone, as the emails of their records are: the logs
        stay, so that they still count against the limit of the marketer
        who sent them; blank the subject of the test emails made for a
        record of the parties, and log them on their activity instead"""
        pool = Pool()
        IrEmail = pool.get('ir.email')
        Address = pool.get('ir.email.address')
        ir_email = IrEmail.__table__()
        address = Address.__table__()
        cursor = Transaction().connection.cursor()
        unlinked = (ir_email.marketing_automation_test == Literal(True)) | (
            (ir_email.marketing_automation_record == Null)
            & (ir_email.marketing_automation_activity != Null))
        logged = []
        for sub in grouped_slice(
                sorted(cls.marketing_addresses(party_ids)),
                backend.MAX_QUERY_PARAMS):
            cursor.execute(*ir_email.select(
                    ir_email.id,
                    where=unlinked & ir_email.id.in_(address.select(
                            address.email,
                            where=Lower(address.address).in_(list(sub))))))
            logged.extend(i for i, in cursor)
        for sub in grouped_slice(logged, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            cursor.execute(*address.delete(
                    where=reduce_ids(address.email, sub)))
            cursor.execute(*ir_email.update(
                    [ir_email.recipients, ir_email.recipients_secondary,
                        ir_email.recipients_hidden, ir_email.subject,
                        ir_email.body, ir_email.message_id],
                    [Null] * 6,
                    where=reduce_ids(ir_email.id, sub)))
        varchar = Transaction().database.sql_type('VARCHAR').base
        for references in cls.marketing_references(party_ids):
            cursor.execute(*ir_email.update(
                    [ir_email.subject, ir_email.resource],
                    [Null, Concat('marketing.automation.activity,',
                            Cast(ir_email.marketing_automation_activity,
                                varchar))],
                    where=(ir_email.marketing_automation_test
                        == Literal(True))
                    & ir_email.resource.in_(references)))

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
    def erase_marketing_faults(cls, party_ids):
        """Write *** for the names and the addresses of the parties in the
        errors of the scenarios and activities: the error of a template or
        a condition that fails for every recipient quotes the first one's;
        the scenarios and activities stay paused"""
        pool = Pool()
        traces = cls.marketing_traces(party_ids)
        if not traces:
            return
        erased = _traces_pattern(traces)
        cursor = Transaction().connection.cursor()
        for model in [
                'marketing.automation.scenario',
                'marketing.automation.activity']:
            table = pool.get(model).__table__()
            cursor.execute(*table.select(
                    table.id, table.error,
                    where=(table.error != Null)
                    & _contains_any(Lower(table.error), traces)))
            for record_id, error in cursor.fetchall():
                blanked = erased.sub('***', error)
                if blanked != error:
                    cursor.execute(*table.update(
                            [table.error], [blanked],
                            where=table.id == record_id))

    @classmethod
    def erase_marketing_previews(cls, party_ids):
        """Close the previews of emails left open that show a name or an
        address of the parties: the stored state of their wizard is
        deleted"""
        pool = Pool()
        Session = pool.get('ir.session.wizard')
        session = Session.__table__()
        cursor = Transaction().connection.cursor()
        traces = cls.marketing_traces(party_ids)
        if not traces:
            return
        erased = _traces_pattern(traces)
        # the field of the form of the preview, in the JSON of its state
        cursor.execute(*session.select(
                session.id, session.data,
                where=Like(session.data, '%"test_addresses"%')))
        shown = []
        for session_id, data in cursor.fetchall():
            try:
                values = json.loads(data)
            except ValueError:
                continue
            if any(erased.search(v) for v in _strings(values)):
                shown.append(session_id)
        for sub in grouped_slice(shown, backend.MAX_QUERY_PARAMS):
            cursor.execute(*session.delete(
                    where=reduce_ids(session.id, list(sub))))

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


def _contains_any(column, traces):
    "The SQL condition that the text of column holds one of the traces"
    return Or([
            Like(column, '%' + re.sub(r'([\\%_])', r'\\\1', t) + '%',
                escape='\\')
            for t in traces])


def _traces_pattern(traces):
    """The regular expression of the traces as whole words (a name inside
    another word is not that name), whatever their case"""
    return re.compile(r'(?<!\w)(?:%s)(?!\w)' % '|'.join(
            re.escape(t) for t in sorted(traces, key=len, reverse=True)),
        re.IGNORECASE)


def _strings(value):
    "The strings in a JSON value"
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class _RandomBlob(Function):
    __slots__ = ()
    _function = 'RANDOMBLOB'


class _Hex(Function):
    __slots__ = ()
    _function = 'HEX'


def _new_uuid():
    "The SQL expression of a new random UUID in hexadecimal for each row"
    return tools.random_hex() or Lower(_Hex(_RandomBlob(Literal(16))))
