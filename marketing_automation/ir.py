# SPDX-License-Identifier: GPL-3.0-or-later
import datetime

from sql import Literal, Null

from trytond import backend
from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from .mixin import MarketingAutomationMixin
from .tools import id_batches

_NO_ACCESS = {'read': 0, 'write': 0, 'create': 0, 'delete': 0}
_READ = {'read': 1, 'write': 0, 'create': 0, 'delete': 0}


def is_marketer():
    "Whether the user of the transaction is of the Marketing group"
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    return ModelData.get_id('marketing', 'group_marketing') in (
        User.get_groups())


def is_administrator():
    """Whether the user of the transaction administers the database: a
    member of the group Administration up to trytond 8.0, an administrator
    user since 8.2, which has no such group"""
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    if hasattr(User, 'is_administrator'):
        return User.is_administrator()
    try:
        group_id = ModelData.get_id('res', 'group_admin')
    except KeyError:
        return False
    return group_id in User.get_groups()


class Rule(metaclass=PoolMeta):
    __name__ = 'ir.rule'

    @classmethod
    def _get_context(cls, model_name):
        # the rules of the module name the administrators the same way
        # with every series of trytond
        context = super()._get_context(model_name)
        context['marketing_administrator'] = is_administrator()
        return context


class ModelFieldAccess(metaclass=PoolMeta):
    __name__ = 'ir.model.field.access'

    @classmethod
    def get_access(cls, models):
        pool = Pool()
        accesses = super().get_access(models)
        if not Transaction().user:
            return accesses
        accesses = dict(accesses)
        administrator = None
        if 'web.shortened_url' in accesses:
            administrator = is_administrator()
            if administrator:
                # the tracking tokens: the administrators read them as the
                # Marketing group does (trytond 8.2 lets them read any
                # field)
                accesses['web.shortened_url'] = {
                    **accesses['web.shortened_url'], 'token': _READ}
        for model in accesses:
            if not issubclass(pool.get(model), MarketingAutomationMixin):
                continue
            # who unsubscribed, who has no address: the marketers' and the
            # administrators', as the tokens, on every model of the mixin,
            # unless the field accesses of the model say otherwise
            if administrator is None:
                administrator = is_administrator()
            if administrator:
                audience = _READ
            elif 'marketing_audience' in accesses[model]:
                continue
            else:
                audience = _READ if is_marketer() else _NO_ACCESS
            accesses[model] = {
                **accesses[model], 'marketing_audience': audience}
        return accesses


class Email(metaclass=PoolMeta):
    __name__ = 'ir.email'

    marketing_automation_activity = fields.Many2One(
        'marketing.automation.activity', "Activity", readonly=True,
        ondelete='SET NULL')
    marketing_automation_record = fields.Many2One(
        'marketing.automation.record', "Record", readonly=True,
        ondelete='SET NULL')
    marketing_automation_test = fields.Boolean(
        "Marketing Test", readonly=True,
        help="A test email of a marketing activity, sent by a marketer.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # the test emails of a user in the last hour, against their limit
        cls._sql_indexes.add(Index(t,
                (t.create_uid, Index.Equality()),
                (t.create_date, Index.Range()),
                where=t.marketing_automation_test == Literal(True)))
        # the emails whose subject waits for the purge of the messages
        cls._sql_indexes.add(Index(t,
                (t.create_date, Index.Range()),
                where=(t.marketing_automation_activity != Null)
                & (t.subject != Null)))

    @classmethod
    def default_marketing_automation_test(cls):
        return False

    @classmethod
    def log_marketing_emails(cls, ids):
        """Log the sent emails of ids of the outbox
        (marketing.automation.email), a few statements per batch"""
        pool = Pool()
        Outbox = pool.get('marketing.automation.email')
        Address = pool.get('ir.email.address')
        RecordActivity = pool.get('marketing.automation.record.activity')
        Record = pool.get('marketing.automation.record')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = Outbox.__table__()
        record_activity = RecordActivity.__table__()
        record = Record.__table__()
        ir_email = cls.__table__()
        address = Address.__table__()
        now = datetime.datetime.now()
        returning = transaction.database.has_returning()
        columns = [ir_email.create_uid, ir_email.create_date,
            ir_email.recipients, ir_email.subject, ir_email.message_id,
            ir_email.resource, ir_email.marketing_automation_activity,
            ir_email.marketing_automation_record]
        address_columns = [address.create_uid, address.create_date,
            address.email, address.address]
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            sub = list(sub)
            query = table.join(record_activity,
                condition=table.record_activity == record_activity.id
                ).join(record,
                condition=record_activity.record == record.id
                ).select(
                    Literal(transaction.user), Literal(now),
                    table.recipient, table.subject, table.message_id,
                    record.record, record_activity.activity, record.id,
                    where=reduce_ids(table.id, sub))
            if returning:
                # ir.email has no index on the Message-ID: the new rows give
                # their ids rather than being searched among all the others
                cursor.execute(*ir_email.insert(
                        columns, query,
                        returning=[ir_email.id, ir_email.message_id]))
                logged = {m: i for i, m in cursor}
                cursor.execute(*table.select(
                        table.message_id, table.address,
                        where=reduce_ids(table.id, sub)))
                addresses = [
                    [transaction.user, now, logged[message_id], address_]
                    for message_id, address_ in cursor.fetchall()
                    if message_id in logged]
                if addresses:
                    cursor.execute(*address.insert(
                            address_columns, addresses))
            else:
                cursor.execute(*ir_email.insert(columns, query))
                # SQLite finds the new rows through the index of their record
                cursor.execute(*address.insert(
                        address_columns,
                        table.join(record_activity,
                            condition=(
                                table.record_activity == record_activity.id)
                            ).join(ir_email,
                            condition=(ir_email.marketing_automation_record
                                == record_activity.record)
                            & (ir_email.message_id == table.message_id)
                            ).select(
                            Literal(transaction.user), Literal(now),
                            ir_email.id, table.address,
                            where=reduce_ids(table.id, sub))))

    @classmethod
    def purge_marketing_messages(cls, until):
        """Blank the subject and body of the marketing emails logged before
        until"""
        ir_email = cls.__table__()
        cursor = Transaction().connection.cursor()
        for ids in id_batches(ir_email,
                (ir_email.marketing_automation_activity != Null)
                & (ir_email.subject != Null)
                & (ir_email.create_date < until)):
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*ir_email.update(
                        [ir_email.subject, ir_email.body], [Null, Null],
                        where=reduce_ids(ir_email.id, sub)))


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('marketing.automation.scenario|trigger',
                    "Trigger Marketing Scenarios"),
                ('marketing.automation.record.activity|process',
                    "Process Marketing Activity"),
                ('marketing.automation.event|purge',
                    "Purge Old Marketing Email Events"),
                ('marketing.automation.email|purge',
                    "Purge Old Marketing Messages and Tracked Links"),
                ])
