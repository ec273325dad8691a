# SPDX-License-Identifier: GPL-3.0-or-later
from sql import Literal, Null

from trytond.model import Index, fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction

from .mixin import MarketingAutomationMixin

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
