# SPDX-License-Identifier: GPL-3.0-or-later
"""The contract of SPEC.md: what a site running Tryton's own module finds
again here — models, fields, selections, buttons, crons, messages, report
and access.  A drift from it fails with the name of what drifted."""
from sql import Column

from trytond.model import Unique
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    TestCase, activate_module, drop_db, with_transaction)
from trytond.transaction import Transaction

SCENARIO = 'marketing.automation.scenario'
ACTIVITY = 'marketing.automation.activity'
RECORD = 'marketing.automation.record'
RECORD_ACTIVITY = 'marketing.automation.record.activity'
UNSUBSCRIBED = 'party.party-unsubscribed-marketing.automation.scenario'
MODELS = {'party.party', 'sale.sale'}
# the module adds tag_party to SPEC's actions
ACTIONS = {None, 'send_email', 'tag_party'}
# the action that the test extension adds (marketing_automation/tests)
TEST_ACTIONS = {'record_visit'}
EVENTS = {None, 'email_opened', 'email_clicked'}


def selection_values(Model, description):
    """The values a selection or reference field offers, without those of
    the test extension"""
    selection = description['selection']
    if isinstance(selection, str):
        if description.get('selection_change_with'):
            # the values depend on the record, an empty one has them all
            selection = getattr(Model(), selection)()
        else:
            selection = getattr(Model, selection)()
    return {v for v, _ in selection} - TEST_ACTIONS


def field(type_, relation=None, selection=None, **attributes):
    "What SPEC says of a field"
    return {
        'type': type_,
        'relation': relation,
        'selection': selection,
        **attributes,
        }


FIELDS = {
    SCENARIO: {
        'name': field('char', translate=True),
        'model': field('selection', selection=MODELS, required=True),
        'domain': field('char', required=True),
        'activities': field('one2many', ACTIVITY),
        'record_count': field('integer'),
        'record_count_blocked': field('integer'),
        'block_rate': field('float'),
        'block_rate_trend': field('char'),
        'unsubscribable': field('boolean'),
        'state': field(
            'selection', selection={'draft', 'running', 'stopped'},
            readonly=True),
        },
    ACTIVITY: {
        'name': field('char', required=True, translate=True),
        'parent': field(
            'reference', selection={SCENARIO, ACTIVITY}, required=True),
        'children': field('one2many', ACTIVITY),
        'parent_action': field('selection', selection=ACTIONS),
        'event': field('selection', selection=EVENTS),
        'negative': field('boolean'),
        'on': field('selection', selection={
                None, 'email_opened', 'email_opened_not',
                'email_clicked', 'email_clicked_not'}),
        'condition': field('char'),
        'delay': field('timedelta'),
        'action': field('selection', selection=ACTIONS),
        'email_from': field('char', translate=True),
        'email_title': field('char', translate=True),
        'email_template': field('text', translate=True),
        'record_count': field('integer'),
        'email_opened': field('integer'),
        'email_clicked': field('integer'),
        'email_open_rate': field('float'),
        'email_click_rate': field('float'),
        'email_click_through_rate': field('float'),
        'email_open_rate_trend': field('char'),
        'email_click_rate_trend': field('char'),
        'email_click_through_rate_trend': field('char'),
        },
    RECORD: {
        'scenario': field(
            'many2one', SCENARIO, required=True, ondelete='CASCADE'),
        'record': field('reference', selection=MODELS, required=True),
        'blocked': field('boolean'),
        'uuid': field('char', readonly=True),
        },
    RECORD_ACTIVITY: {
        'record': field('many2one', RECORD, ondelete='CASCADE'),
        'activity': field('many2one', ACTIVITY, ondelete='CASCADE'),
        'activity_action': field('selection', selection=ACTIONS),
        'at': field('datetime'),
        'email_opened': field('boolean'),
        'email_clicked': field('boolean'),
        'state': field(
            'selection', selection={'waiting', 'done', 'cancelled'},
            readonly=True),
        },
    'party.party': {
        'marketing_scenario_unsubscribed': field('many2many', SCENARIO),
        'marketing_party': field('many2one', 'party.party'),
        },
    UNSUBSCRIBED: {
        'party': field('many2one', 'party.party'),
        'scenario': field('many2one', SCENARIO),
        },
    'ir.email': {
        'marketing_automation_activity': field(
            'many2one', ACTIVITY, readonly=True),
        'marketing_automation_record': field(
            'many2one', RECORD, readonly=True),
        },
    'sale.sale': {
        'marketing_party': field('many2one', 'party.party'),
        },
    }

BUTTONS = {
    SCENARIO: {'run', 'stop', 'draft'},
    RECORD: {'block'},
    RECORD_ACTIVITY: {'on_email_opened', 'on_email_clicked'},
    }

CRONS = {
    'marketing.automation.scenario|trigger': (1, 'hours'),
    'marketing.automation.record.activity|process': (15, 'minutes'),
    }

MESSAGES = [
    'msg_scenario_invalid_domain',
    'msg_activity_invalid_condition',
    'msg_activity_invalid_email_template',
    'msg_activity_invalid_email_title',
    'msg_activity_record_unique',
    'msg_record_scenario_unique',
    'msg_record_scenario_record_unique',
    'msg_record_uuid_unique',
    ]

UNIQUES = {
    RECORD: {
        ('scenario', 'record'): 'msg_record_scenario_unique',
        ('uuid',): 'msg_record_uuid_unique',
        },
    RECORD_ACTIVITY: {
        ('activity', 'record'): 'msg_activity_record_unique',
        },
    }


class MarketingAutomationContractTestCase(TestCase):
    "Marketing automation contract"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module(['marketing_automation', 'sale'])

    @with_transaction()
    def test_fields(self):
        "Every field of SPEC has its type, relation and selection"
        pool = Pool()
        for model_name, fields in FIELDS.items():
            Model = pool.get(model_name)
            descriptions = Model.fields_get(list(fields))
            for name, expected in fields.items():
                where = '%s.%s' % (model_name, name)
                with self.subTest(field=where):
                    self.assertIn(
                        name, descriptions, msg='%s is missing' % where)
                    self.assertField(
                        where, Model, name, descriptions[name], expected)

    def assertField(self, where, Model, name, description, expected):
        self.assertEqual(
            description['type'], expected['type'],
            msg="%s is a %s field where SPEC says %s" % (
                where, description['type'], expected['type']))
        if expected['relation']:
            self.assertEqual(
                description.get('relation'), expected['relation'],
                msg="%s points to %s where SPEC says %s" % (
                    where, description.get('relation'),
                    expected['relation']))
        if expected['selection'] is not None:
            values = selection_values(Model, description)
            self.assertEqual(
                values, expected['selection'],
                msg="%s offers %s where SPEC says %s" % (
                    where, sorted(values, key=str),
                    sorted(expected['selection'], key=str)))
        for attribute in ['required', 'readonly', 'translate']:
            if attribute in expected:
                self.assertEqual(
                    bool(description.get(attribute)), expected[attribute],
                    msg="%s: %s is %s where SPEC says %s" % (
                        where, attribute, description.get(attribute),
                        expected[attribute]))
        if 'ondelete' in expected:
            field = Model._fields[name]
            self.assertEqual(
                field.ondelete, expected['ondelete'],
                msg="%s: ondelete is %s where SPEC says %s" % (
                    where, field.ondelete, expected['ondelete']))

    @with_transaction()
    def test_many2many_through(self):
        "The unsubscribed scenarios of a party go through the relation model"
        pool = Pool()
        Party = pool.get('party.party')
        field = Party._fields['marketing_scenario_unsubscribed']
        self.assertEqual(
            (field.relation_name, field.origin, field.target),
            (UNSUBSCRIBED, 'party', 'scenario'))

    @with_transaction()
    def test_defaults(self):
        "A new scenario is a draft on every record, not unsubscribable"
        pool = Pool()
        Scenario = pool.get(SCENARIO)
        Activity = pool.get(ACTIVITY)
        RecordActivity = pool.get(RECORD_ACTIVITY)
        self.assertEqual(
            Scenario.default_get(['domain', 'unsubscribable', 'state']),
            {'domain': '[]', 'unsubscribable': False, 'state': 'draft'})
        self.assertEqual(
            Activity.default_get(['negative']), {'negative': False})
        self.assertEqual(
            RecordActivity.default_get(['state']), {'state': 'waiting'})

    @with_transaction()
    def test_buttons(self):
        "The buttons of SPEC exist"
        pool = Pool()
        for model_name, buttons in BUTTONS.items():
            Model = pool.get(model_name)
            with self.subTest(model=model_name):
                self.assertLessEqual(
                    buttons, set(Model._buttons),
                    msg="%s misses the buttons %s" % (
                        model_name, buttons - set(Model._buttons)))

    @with_transaction()
    def test_state_transitions(self):
        "The states of scenarios and record activities move as SPEC says"
        pool = Pool()
        self.assertEqual(pool.get(SCENARIO)._transitions, {
                ('draft', 'running'),
                ('running', 'stopped'),
                ('stopped', 'draft'),
                })
        self.assertEqual(pool.get(RECORD_ACTIVITY)._transitions, {
                ('waiting', 'done'),
                ('waiting', 'cancelled'),
                })

    @with_transaction()
    def test_crons(self):
        "The two crons are offered and installed at their interval"
        pool = Pool()
        Cron = pool.get('ir.cron')
        methods = selection_values(
            Cron, Cron.fields_get(['method'])['method'])
        for method, (number, type_) in CRONS.items():
            with self.subTest(method=method):
                self.assertIn(method, methods)
                crons = Cron.search([('method', '=', method)])
                self.assertEqual(
                    [(c.interval_number, c.interval_type) for c in crons],
                    [(number, type_)],
                    msg="%s is not installed every %s %s" % (
                        method, number, type_))

    @with_transaction()
    def test_shortened_url(self):
        "Shortened URLs may call the two events of a record activity"
        pool = Pool()
        ShortenedURL = pool.get('web.shortened_url')
        description = ShortenedURL.fields_get(['method', 'record'])
        methods = selection_values(ShortenedURL, description['method'])
        self.assertLessEqual({
                RECORD_ACTIVITY + '|on_email_opened',
                RECORD_ACTIVITY + '|on_email_clicked',
                }, methods)
        models = selection_values(ShortenedURL, description['record'])
        self.assertIn(RECORD_ACTIVITY, models)

    @with_transaction()
    def test_messages(self):
        "The message ids of SPEC exist"
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        Message = pool.get('ir.message')
        for xml_id in MESSAGES:
            with self.subTest(message=xml_id):
                message = Message(
                    ModelData.get_id('marketing_automation', xml_id))
                self.assertTrue(message.text)

    @with_transaction()
    def test_unique_constraints(self):
        "The unique constraints of SPEC exist and their messages too"
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        for model_name, uniques in UNIQUES.items():
            Model = pool.get(model_name)
            found = {}
            for _, constraint, message in Model._sql_constraints:
                if not isinstance(constraint, Unique):
                    continue
                columns = tuple(
                    c.name for c in constraint.columns
                    if isinstance(c, Column))
                found[columns] = message
            for columns, xml_id in uniques.items():
                where = '%s unique %s' % (model_name, ', '.join(columns))
                with self.subTest(constraint=where):
                    self.assertEqual(
                        found.get(columns),
                        'marketing_automation.' + xml_id,
                        msg='%s is missing or has another message' % where)
            for columns, message in found.items():
                with self.subTest(message=message):
                    module, xml_id = message.split('.')
                    # raises when the message does not exist
                    self.assertTrue(ModelData.get_id(module, xml_id))

    @with_transaction()
    def test_report(self):
        "The unsubscribe page is a registered report"
        pool = Pool()
        ActionReport = pool.get('ir.action.report')
        pool.get('marketing.automation.unsubscribe', type='report')
        self.assertEqual(ActionReport.search([
                    ('report_name', '=', 'marketing.automation.unsubscribe'),
                    ], count=True), 1)

    @with_transaction()
    def test_access(self):
        "The marketing group reads and writes the four models, nobody else"
        pool = Pool()
        User = pool.get('res.user')
        ModelData = pool.get('ir.model.data')
        ModelAccess = pool.get('ir.model.access')
        marketer, other = User.create([{
                    'name': "Marketer",
                    'login': 'marketer',
                    'groups': [('add', [ModelData.get_id(
                                    'marketing', 'group_marketing')])],
                    }, {
                    'name': "Other",
                    'login': 'other',
                    }])
        for model_name in [SCENARIO, ACTIVITY, RECORD, RECORD_ACTIVITY]:
            for user, allowed in [(marketer, True), (other, False)]:
                for mode in ['read', 'write']:
                    with self.subTest(
                            model=model_name, user=user.login, mode=mode):
                        with Transaction().set_user(user.id), \
                                Transaction().set_context(
                                    _check_access=True):
                            self.assertEqual(ModelAccess.check(
                                    model_name, mode,
                                    raise_exception=False), allowed)
