# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine seen by a marketer: who enters a scenario, when each activity
runs, what the email events change, and what is refused on save.

The tests of the email events send their emails for real: the crons run in
committed transactions, a real SMTP server on the loopback accepts the
messages, and the recipients open and click them over HTTP."""
import datetime as dt

from trytond import backend
from trytond.i18n import gettext
from trytond.model.exceptions import ValidationError
from trytond.modules.marketing_automation.exceptions import (
    ActivityError, ConditionError, DomainError, TemplateError)
from trytond.pool import Pool
from trytond.pyson import Bool, Eval
from trytond.tests.test_tryton import (
    CONTEXT, DB_NAME, USER, TestCase, activate_module, drop_db,
    with_transaction)
from trytond.transaction import Transaction

from .tools import (
    Mail, SendingTestMixin, committed, create_parties, decide_events, encode,
    human_request, inspecting, override_config)

EMAIL = {
    'action': 'send_email',
    'email_title': "Hello ${record.name}",
    'email_template': (
        '<p>Hello</p>'
        '<p><a href="https://shop.example.com/">Visit our shop</a></p>'),
    }


def message_start(message_id, **variables):
    "The text of the message up to where the exception is written"
    variables.setdefault('exception', '\0')
    return gettext(
        'marketing_automation.' + message_id, **variables).split('\0')[0]


def address(name):
    "The email address of the recipient name"
    return '%s@example.com' % name.lower()


def create_scenario(parties, activities, state='running', **values):
    "A scenario on parties whose audience is exactly parties"
    Scenario = Pool().get('marketing.automation.scenario')
    values.setdefault(
        'domain', encode([('id', 'in', [p.id for p in parties])]))
    scenario, = Scenario.create([{
                'name': "Welcome",
                'model': 'party.party',
                'activities': [('create', activities)],
                **values,
                }])
    if state in {'running', 'stopped'}:
        Scenario.run([scenario])
    if state == 'stopped':
        Scenario.stop([scenario])
    return scenario


def activities():
    "The activities by name"
    Activity = Pool().get('marketing.automation.activity')
    return {a.name: a for a in Activity.search([])}


def entries(activity):
    "The record activities of activity by party name"
    RecordActivity = Pool().get('marketing.automation.record.activity')
    return {
        e.record.record.name: e
        for e in RecordActivity.search([('activity', '=', activity.id)])}


def records(scenario):
    "The marketing records of scenario by party name"
    Record = Pool().get('marketing.automation.record')
    return {
        r.record.name: r
        for r in Record.search([('scenario', '=', scenario.id)])}


def states(activity):
    return {name: e.state for name, e in entries(activity).items()}


def make_due(*record_activities):
    RecordActivity = Pool().get('marketing.automation.record.activity')
    RecordActivity.write(list(record_activities), {
            'at': dt.datetime.now() - dt.timedelta(minutes=1),
            })


def email_tree(suffix=''):
    "An email whose children wait for its events; suffix ends every name"
    return [{
            'name': "Email" + suffix,
            **EMAIL,
            'children': [('create', [{
                            'name': "Opened" + suffix,
                            'on': 'email_opened',
                            'delay': dt.timedelta(hours=1),
                            }, {
                            'name': "Not opened" + suffix,
                            'on': 'email_opened_not',
                            'delay': dt.timedelta(days=2),
                            }, {
                            'name': "Clicked" + suffix,
                            'on': 'email_clicked',
                            }, {
                            'name': "Not clicked" + suffix,
                            'on': 'email_clicked_not',
                            'delay': dt.timedelta(days=3),
                            }, {
                            'name': "Follow-up" + suffix,
                            'delay': dt.timedelta(days=1),
                            }])],
            }]


class TimeAssertions:
    "What the test cases of the engine assert of the times of the entries"

    def assertAtAfter(self, at, before, after, delay=dt.timedelta()):
        "Assert at is now + delay, now being between before and after"
        # the database may keep whole seconds only
        second = dt.timedelta(seconds=1)
        self.assertIsNotNone(at)
        self.assertGreaterEqual(at, before + delay - second)
        self.assertLessEqual(at, after + delay + second)


class MarketingAutomationEngineTestCase(TimeAssertions, TestCase):
    "Marketing automation engine"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def assertRefused(self, exception_class, function, *names):
        "Assert that function raises exception_class naming names"
        with self.assertRaises(exception_class) as cm:
            function()
        for name in names:
            self.assertIn(name, cm.exception.message)
        return cm.exception.message

    @with_transaction()
    def test_trigger_twice_enters_once(self):
        "A record enters a scenario once even when the cron runs twice"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        create_parties(
            "Customer Ann", "Customer Bob", email=None, commit=False)
        scenario = create_scenario([], [{'name': "Welcome"}],
            domain=encode([('name', 'like', 'Customer %')]))

        Scenario.trigger()
        Scenario.trigger()

        self.assertEqual(Record.search([], count=True), 2)
        self.assertEqual(RecordActivity.search([], count=True), 2)

        create_parties("Customer Cid", email=None, commit=False)
        Scenario.trigger()

        self.assertEqual(set(records(scenario)), {
                "Customer Ann", "Customer Bob", "Customer Cid"})
        self.assertEqual(RecordActivity.search([], count=True), 3)

    @with_transaction()
    def test_trigger_in_batches(self):
        """Records enter in batches, each once with its own unguessable
        uuid, whatever the size of the batches"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        parties = create_parties(
            *("Customer %s" % i for i in range(7)), email=None, commit=False)
        parties[3].active = False
        parties[3].save()
        scenario = create_scenario([], [{'name': "Welcome"}, {
                    'name': "Later", 'delay': dt.timedelta(days=1),
                    }],
            domain=encode([('name', 'like', 'Customer %')]))

        with override_config({('marketing', 'automation_batch_size'): '2'}):
            Scenario.trigger()

        entered = Record.search([('scenario', '=', scenario.id)])
        self.assertEqual(
            sorted(r.record.id for r in entered),
            sorted(p.id for p in parties if p.active))
        uuids = {r.uuid for r in entered}
        self.assertEqual(len(uuids), 6)
        for uuid in uuids:
            self.assertRegex(uuid, r'^[0-9a-f]{32}$')
        by_name = activities()
        self.assertEqual(len(entries(by_name["Welcome"])), 6)
        self.assertEqual(len(entries(by_name["Later"])), 6)

    @with_transaction()
    def test_root_condition(self):
        "The condition of a root activity selects who enters it"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        parties = create_parties("Ann", email=address, commit=False)
        parties += create_parties("Bob", "Cid", email=None, commit=False)
        scenario = create_scenario(parties, [{
                    'name': "Reachable",
                    'condition': encode(Bool(Eval('self', {}).get('email'))),
                    }, {
                    'name': "Not Bob",
                    'condition': encode(
                        Eval('self', {}).get('name') != "Bob"),
                    }, {
                    'name': "Everybody",
                    }])

        Scenario.trigger()

        # every record of the domain enters the scenario
        self.assertEqual(set(records(scenario)), {"Ann", "Bob", "Cid"})
        by_name = activities()
        self.assertEqual(set(entries(by_name["Reachable"])), {"Ann"})
        self.assertEqual(set(entries(by_name["Not Bob"])), {"Ann", "Cid"})
        self.assertEqual(
            set(entries(by_name["Everybody"])), {"Ann", "Bob", "Cid"})

    @with_transaction()
    def test_root_scheduled_at_now_plus_delay(self):
        "A root activity is due at its delay after the record entered"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        parties = create_parties("Ann", email=None, commit=False)
        create_scenario(parties, [{
                    'name': "Now",
                    }, {
                    'name': "Tomorrow",
                    'delay': dt.timedelta(days=1),
                    }])

        before = dt.datetime.now()
        Scenario.trigger()
        after = dt.datetime.now()

        by_name = activities()
        now, = entries(by_name["Now"]).values()
        tomorrow, = entries(by_name["Tomorrow"]).values()
        self.assertEqual(now.state, 'waiting')
        self.assertAtAfter(now.at, before, after)
        self.assertEqual(tomorrow.state, 'waiting')
        self.assertAtAfter(tomorrow.at, before, after, dt.timedelta(days=1))

    @with_transaction()
    def test_do_due_entries(self):
        "Doing entries does the due ones and enters their children"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        RecordActivity = pool.get('marketing.automation.record.activity')
        parties = create_parties("Ann", "Bob", email=None, commit=False)
        create_scenario(parties, [{
                    'name': "Welcome",
                    'children': [('create', [{
                                    'name': "Reminder",
                                    'delay': dt.timedelta(days=7),
                                    }])],
                    }, {
                    'name': "Later",
                    'delay': dt.timedelta(hours=1),
                    }])
        Scenario.trigger()
        by_name = activities()

        before = dt.datetime.now()
        RecordActivity.do(RecordActivity.search([]))
        after = dt.datetime.now()

        self.assertEqual(
            states(by_name["Welcome"]), {"Ann": 'done', "Bob": 'done'})
        for entry in entries(by_name["Welcome"]).values():
            self.assertAtAfter(entry.at, before, after)
            self.assertFalse(entry.error)
        # not due yet
        self.assertEqual(
            states(by_name["Later"]), {"Ann": 'waiting', "Bob": 'waiting'})
        reminders = entries(by_name["Reminder"])
        self.assertEqual(set(reminders), {"Ann", "Bob"})
        for entry in reminders.values():
            self.assertEqual(entry.state, 'waiting')
            self.assertAtAfter(
                entry.at, before, after, dt.timedelta(days=7))

        # doing a done entry again changes nothing
        done = entries(by_name["Welcome"])
        RecordActivity.do(list(done.values()))
        self.assertEqual(
            {n: e.at for n, e in entries(by_name["Welcome"]).items()},
            {n: e.at for n, e in done.items()})
        self.assertEqual(
            {n: e.at for n, e in entries(by_name["Reminder"]).items()},
            {n: e.at for n, e in reminders.items()})

    def test_process_through_queue(self):
        "The cron queues the due entries and the queue does them"
        try:
            with committed():
                parties = create_parties(
                    "Queue Ann", "Queue Bob", email=None, commit=False)
                create_scenario(parties, [{
                            'name': "Queue now",
                            }, {
                            'name': "Queue later",
                            'delay': dt.timedelta(days=1),
                            }])
                Pool().get('marketing.automation.scenario').trigger()

            with committed():
                RecordActivity = Pool().get(
                    'marketing.automation.record.activity')
                RecordActivity.process()
                self.assertTrue(
                    Transaction().tasks, msg="process queued no task")
                # process only queues the work
                self.assertEqual(states(activities()["Queue now"]), {
                        "Queue Ann": 'waiting', "Queue Bob": 'waiting'})

            with Transaction().start(DB_NAME, USER, context=CONTEXT):
                by_name = activities()
                self.assertEqual(states(by_name["Queue now"]), {
                        "Queue Ann": 'done', "Queue Bob": 'done'})
                self.assertEqual(states(by_name["Queue later"]), {
                        "Queue Ann": 'waiting', "Queue Bob": 'waiting'})
        finally:
            Transaction().tasks.clear()
            with committed():
                pool = Pool()
                Scenario = pool.get('marketing.automation.scenario')
                Party = pool.get('party.party')
                Queue = pool.get('ir.queue')
                Scenario.delete(Scenario.search([]))
                Party.delete(Party.search([('name', 'like', 'Queue %')]))
                Queue.delete(Queue.search([]))

    @with_transaction()
    def test_blocked_record_skipped(self):
        "The entries of a blocked record stay waiting"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        parties = create_parties("Ann", "Bob", email=None, commit=False)
        scenario = create_scenario(parties, [{'name': "Welcome"}])
        Scenario.trigger()
        Record.block([records(scenario)["Bob"]])

        RecordActivity.do(RecordActivity.search([]))

        self.assertEqual(
            states(activities()["Welcome"]), {"Ann": 'done', "Bob": 'waiting'})

    @with_transaction()
    def test_deleted_party(self):
        "The entries of a deleted party are done without action, with why"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Party = pool.get('party.party')
        RecordActivity = pool.get('marketing.automation.record.activity')
        ann, bob = create_parties("Ann", "Bob", email=None, commit=False)
        create_scenario([ann, bob], [{'name': "Welcome"}])
        Scenario.trigger()
        ann_entry = [('record.record', '=', str(ann))]
        bob_entry = [('record.record', '=', str(bob))]
        Party.delete([bob])

        RecordActivity.do(RecordActivity.search([]))

        bob_entry, = RecordActivity.search(bob_entry)
        self.assertEqual(bob_entry.state, 'done')
        self.assertEqual(
            bob_entry.error,
            gettext('marketing_automation.msg_record_activity_record_deleted'))
        ann_entry, = RecordActivity.search(ann_entry)
        self.assertEqual(ann_entry.state, 'done')
        self.assertFalse(ann_entry.error)

    @with_transaction()
    def test_condition_false_at_execution(self):
        "An entry whose condition became false is done without action"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Party = pool.get('party.party')
        RecordActivity = pool.get('marketing.automation.record.activity')
        ann, bob = create_parties("Ann", "Bob", email=None, commit=False)
        create_scenario([ann, bob], [{
                    'name': "Email",
                    **EMAIL,
                    'condition': encode(Eval('self', {}).get('active')),
                    }])
        Scenario.trigger()
        Party.write([bob], {'active': False})

        RecordActivity.do(RecordActivity.search([]))

        by_party = entries(activities()["Email"])
        self.assertEqual(by_party["Bob"].state, 'done')
        self.assertEqual(
            by_party["Bob"].error,
            gettext(
                'marketing_automation.msg_record_activity_condition_false'))
        self.assertFalse(by_party["Bob"].email_sent)
        # Ann has no email address: the action ran and says so
        self.assertEqual(by_party["Ann"].state, 'done')
        self.assertEqual(
            by_party["Ann"].error,
            gettext('marketing_automation.msg_email_no_address', party="Ann"))

    @with_transaction()
    def test_event_on_waiting_email(self):
        "An event for an email not sent yet changes nothing"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        RecordActivity = pool.get('marketing.automation.record.activity')
        parties = create_parties("Ann", email=address, commit=False)
        create_scenario(parties, email_tree())
        Scenario.trigger()
        email = activities()["Email"]
        entry = entries(email)["Ann"]

        RecordActivity.on_email_clicked([entry])

        entry = entries(email)["Ann"]
        self.assertEqual(entry.state, 'waiting')
        self.assertFalse(entry.email_opened)
        self.assertFalse(entry.email_clicked)
        self.assertEqual(len(entries(activities()["Opened"])), 0)

    @with_transaction()
    def test_not_running_scenario_runs_nothing(self):
        "A draft or stopped scenario enters nobody and does nothing"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        RecordActivity = pool.get('marketing.automation.record.activity')
        parties = create_parties("Ann", "Bob", email=None, commit=False)
        scenario = create_scenario(
            parties, [{'name': "Welcome"}], state='draft')

        Scenario.trigger()
        Scenario.trigger([scenario])
        self.assertEqual(Record.search([], count=True), 0)

        Scenario.run([scenario])
        Scenario.trigger()
        Scenario.stop([scenario])
        create_parties("Cid", email=None, commit=False)
        Scenario.write([scenario], {
                'domain': encode([('name', 'in', ["Ann", "Bob", "Cid"])]),
                })
        Scenario.trigger()
        self.assertEqual(set(records(scenario)), {"Ann", "Bob"})

        Transaction().tasks.clear()
        RecordActivity.process()
        self.assertEqual(Transaction().tasks, [])
        RecordActivity.do(RecordActivity.search([]))
        self.assertEqual(
            states(activities()["Welcome"]),
            {"Ann": 'waiting', "Bob": 'waiting'})

        # back to draft, the scenario still does nothing
        Scenario.draft([scenario])
        RecordActivity.do(RecordActivity.search([]))
        self.assertEqual(
            states(activities()["Welcome"]),
            {"Ann": 'waiting', "Bob": 'waiting'})

    @with_transaction()
    def test_invalid_domain(self):
        "A domain that is not a valid search on the model is refused"
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Party = pool.get('party.party')
        for name, domain in [
                ("not JSON", "[('name', '=',"),
                ("not a list", encode({'name': "Ann"})),
                ("unknown field", encode([('unknown_field', '=', 1)])),
                ("unknown operator", encode([('name', 'equals', "Ann")])),
                ]:
            with self.subTest(domain=name):
                message = self.assertRefused(
                    DomainError,
                    lambda: Scenario.create([{
                                'name': "Scenario %s" % name,
                                'model': 'party.party',
                                'domain': domain,
                                }]),
                    "Scenario %s" % name)
                self.assertTrue(message.startswith(message_start(
                            'msg_scenario_invalid_domain',
                            domain=domain, scenario="Scenario %s" % name)),
                    msg=message)

        scenario, = Scenario.create([{
                    'name': "Valid",
                    'model': 'party.party',
                    }])
        self.assertRefused(
            DomainError,
            lambda: Scenario.write([scenario], {'domain': "[["}),
            "Valid")
        # the transaction goes on
        self.assertEqual(Party.search([], count=True), 0)

    def test_domain_failing_in_database(self):
        "A domain the database rejects is refused, the transaction goes on"
        for name, domain, rejected_by in [
                # PostgreSQL refuses a LIKE pattern ending with its escape
                ("Pattern", [('name', 'like', '%\\')], {'postgresql'}),
                # SQLite stores integers on 64 bits
                ("Huge id", [('id', '=', 2 ** 70)], {'sqlite'}),
                ]:
            with self.subTest(domain=name):
                self.check_domain_failing_in_database(
                    name, encode(domain), backend.name in rejected_by)

    @with_transaction()
    def check_domain_failing_in_database(self, name, domain, rejected):
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Party = pool.get('party.party')
        create_parties("Ann", email=None, commit=False)

        def create():
            return Scenario.create([{
                        'name': name,
                        'model': 'party.party',
                        'domain': domain,
                        }])
        if rejected:
            self.assertRefused(DomainError, create, name)
        else:
            create()

        # the transaction goes on
        self.assertEqual(Party.search([], count=True), 1)
        create_parties("Bob", email=None, commit=False)
        self.assertEqual(Party.search([], count=True), 2)

    @with_transaction()
    def test_invalid_email_title_and_template(self):
        "A title or a template that is not a valid Genshi template is refused"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        scenario = create_scenario([], [], state='draft')
        for field, source, message_id in [
                ('email_title', "Hello ${record.name",
                    'msg_activity_invalid_email_title'),
                ('email_template', '<p>Hello<p></b>',
                    'msg_activity_invalid_email_template'),
                ]:
            with self.subTest(field=field):
                values = dict(EMAIL, name="Greeting", parent=str(scenario))
                values[field] = source
                message = self.assertRefused(
                    TemplateError,
                    lambda: Activity.create([values]), "Greeting")
                self.assertTrue(message.startswith(message_start(
                            message_id, activity="Greeting")),
                    msg=message)

        activity, = Activity.create([dict(
                    EMAIL, name="Greeting", parent=str(scenario))])
        self.assertEqual(activity.action, 'send_email')

    @with_transaction()
    def test_invalid_condition(self):
        "A condition that is not PYSON is refused"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        scenario = create_scenario([], [], state='draft')
        condition = '{"__class__": "Eval", "v": "self"'

        message = self.assertRefused(
            ConditionError,
            lambda: Activity.create([{
                        'name': "Greeting",
                        'parent': str(scenario),
                        'condition': condition,
                        }]),
            "Greeting")
        self.assertTrue(message.startswith(message_start(
                    'msg_activity_invalid_condition',
                    condition=condition, activity="Greeting")),
            msg=message)

        activity, = Activity.create([{
                    'name': "Greeting",
                    'parent': str(scenario),
                    'condition': encode(Eval('self', {}).get('active')),
                    }])
        self.assertRefused(
            ConditionError,
            lambda: Activity.write([activity], {'condition': "True"}),
            "Greeting")

    @with_transaction()
    def test_on_field(self):
        "The 'On' field shows and sets the event and its polarity"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        create_scenario([], email_tree(), state='draft')
        by_name = activities()
        for name, event, negative, on in [
                ("Opened", 'email_opened', False, 'email_opened'),
                ("Not opened", 'email_opened', True, 'email_opened_not'),
                ("Clicked", 'email_clicked', False, 'email_clicked'),
                ("Not clicked", 'email_clicked', True, 'email_clicked_not'),
                ("Follow-up", None, False, None),
                ]:
            with self.subTest(activity=name):
                activity = by_name[name]
                self.assertEqual(activity.event, event)
                self.assertEqual(bool(activity.negative), negative)
                self.assertEqual(activity.on, on)

        activity = by_name["Clicked"]
        Activity.write([activity], {
                'on': 'email_opened_not',
                'delay': dt.timedelta(days=1),
                })
        activity = Activity(activity.id)
        self.assertEqual(
            (activity.event, activity.negative), ('email_opened', True))
        Activity.write([activity], {'event': 'email_clicked'})
        self.assertEqual(Activity(activity.id).on, 'email_clicked_not')
        Activity.write([activity], {'on': None})
        activity = Activity(activity.id)
        self.assertEqual((activity.event, activity.negative), (None, False))

    @with_transaction()
    def test_event_needs_parent_action(self):
        "An event that the parent's action does not produce is refused"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        scenario = create_scenario([], [{'name': "Wait"}], state='draft')
        wait = activities()["Wait"]
        for name, values in [
                ("Root opened", {
                        'parent': str(scenario), 'on': 'email_opened'}),
                ("After wait", {
                        'parent': str(wait), 'event': 'email_clicked'}),
                ("Not after wait", {
                        'parent': str(wait), 'on': 'email_clicked_not',
                        'delay': dt.timedelta(days=1)}),
                ]:
            with self.subTest(activity=name):
                message = self.assertRefused(
                    ActivityError,
                    lambda: Activity.create([{'name': name, **values}]),
                    name)
                self.assertEqual(message, gettext(
                        'marketing_automation.msg_activity_invalid_event',
                        activity=name))

    @with_transaction()
    def test_delay(self):
        "A negative activity needs a delay, and no delay is negative"
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        create_scenario([], email_tree(), state='draft')
        email = activities()["Email"]

        self.assertRefused(
            ValidationError,
            lambda: Activity.create([{
                        'name': "Not opened at once",
                        'parent': str(email),
                        'on': 'email_opened_not',
                        }]),
            "Not opened at once")
        self.assertRefused(
            ValidationError,
            lambda: Activity.create([{
                        'name': "Before sending",
                        'parent': str(email),
                        'delay': dt.timedelta(hours=-1),
                        }]),
            "Before sending")
        self.assertRefused(
            ValidationError,
            lambda: Activity.write([activities()["Not opened"]], {
                    'delay': None}),
            "Not opened")

    @with_transaction()
    def test_record_count(self):
        """A draft scenario previews its audience, a running one counts its
        records and the blocked ones"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        create_parties(
            "Customer Ann", "Customer Bob", email=None, commit=False)
        # whether an inactive party enters is the engine's choice, the
        # preview must agree with it
        create_parties("Customer Cid", active=False, email=None, commit=False)
        create_parties("Supplier Dan", email=None, commit=False)
        scenario = create_scenario([], [{'name': "Welcome"}],
            state='draft', domain=encode([('name', 'like', 'Customer %')]))

        preview = scenario.record_count
        self.assertIn(preview, {2, 3})
        self.assertEqual(scenario.record_count_blocked, 0)
        self.assertEqual(scenario.block_rate, 0)
        create_parties("Customer Eve", email=None, commit=False)
        self.assertEqual(Scenario(scenario.id).record_count, preview + 1)

        Scenario.run([scenario])
        scenario = Scenario(scenario.id)
        self.assertEqual(scenario.record_count, 0)
        self.assertEqual(scenario.block_rate, 0)

        Scenario.trigger()
        # the preview counted the records that entered
        self.assertEqual(len(records(scenario)), preview + 1)
        Record.block([
                records(scenario)["Customer Bob"],
                records(scenario)["Customer Eve"],
                ])
        create_parties("Customer Fay", email=None, commit=False)

        scenario = Scenario(scenario.id)
        self.assertEqual(scenario.record_count, preview + 1)
        self.assertEqual(scenario.record_count_blocked, 2)
        self.assertEqual(
            scenario.block_rate, round(2 / (preview + 1), 2))

    @with_transaction()
    def test_block_unsubscribable(self):
        """Blocking a record of an unsubscribable scenario keeps its party
        out of that scenario"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        ann, bob = parties = create_parties(
            "Ann", "Bob", email=None, commit=False)
        scenario = create_scenario(
            parties, [{'name': "Welcome"}], unsubscribable=True)
        Scenario.trigger()

        Record.block([records(scenario)["Ann"]])

        self.assertEqual(
            [s.id for s in ann.marketing_scenario_unsubscribed],
            [scenario.id])
        self.assertEqual(bob.marketing_scenario_unsubscribed, ())
        self.assertTrue(records(scenario)["Ann"].blocked)
        Record.delete(list(records(scenario).values()))
        Scenario.trigger()
        self.assertEqual(set(records(scenario)), {"Bob"})

    @with_transaction()
    def test_block_subscribable(self):
        """Blocking a record of a scenario that is not unsubscribable blocks
        only that record"""
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Record = pool.get('marketing.automation.record')
        ann, = parties = create_parties("Ann", email=None, commit=False)
        scenario = create_scenario(parties, [{'name': "Welcome"}])
        Scenario.trigger()

        Record.block([records(scenario)["Ann"]])

        self.assertTrue(records(scenario)["Ann"].blocked)
        self.assertEqual(ann.marketing_scenario_unsubscribed, ())
        Record.delete(list(records(scenario).values()))
        Scenario.trigger()
        self.assertEqual(set(records(scenario)), {"Ann"})


class MarketingAutomationEngineEmailTestCase(
        TimeAssertions, SendingTestMixin, TestCase):
    """The email events: the emails go through the crons to a real SMTP
    server, their recipients open and click them over HTTP, and each step
    is committed

    The activities of each test end with its name, so that it reads only
    its own."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('email', 'from'): 'root@server.example.com',
                })

    @property
    def suffix(self):
        return ' ' + self._testMethodName

    def activities(self):
        "The activities of this test by name"
        Activity = Pool().get('marketing.automation.activity')
        return {
            a.name.removesuffix(self.suffix): a
            for a in Activity.search([('name', 'like', '%' + self.suffix)])}

    # As the marketer, the crons and the recipients

    def start_scenario(self, *names):
        """Create the recipients of names and a running scenario of
        email_tree() on them"""
        with committed():
            create_scenario(
                create_parties(
                    *names,
                    email=address, commit=False), email_tree(self.suffix),
                name="Welcome" + self.suffix)

    def send_emails(self):
        """Enter the parties and run the process cron: the mail server
        accepts a message for every party"""
        self.run_crons()
        with inspecting():
            sent = entries(self.activities()["Email"])
            for name, entry in sent.items():
                self.assertEqual(
                    (entry.state, entry.email_sent), ('done', True),
                    msg="the email to %s is not sent" % name)
        self.assertEqual(
            sorted(r for m in self.smtp.received() for r in m.rcpt_tos),
            sorted(address(n) for n in sent))

    def make_due(self, activity_name, name):
        with committed():
            make_due(entries(self.activities()[activity_name])[name])

    def write_activity(self, activity_name, values):
        "Change the activity as the marketer does"
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            Activity.write([self.activities()[activity_name]], values)

    def mail_to(self, name):
        mails = self.smtp.to(address(name))
        self.assertEqual(len(mails), 1, msg="emails to %s" % name)
        return Mail(mails[0])

    def open_email(self, name):
        """The mail client of the recipient name loads the images, and the
        event ledger counts it as a person's"""
        response = human_request(self.client, self.mail_to(name).pixel)
        self.assertEqual(response.status_code, 302)
        decide_events()

    def click(self, name):
        """The recipient name follows the link of the email, and the event
        ledger counts it as a person's"""
        response = human_request(
            self.client, self.mail_to(name).link("Visit our shop"))
        self.assertEqual(response.status_code, 301)
        self.assertEqual(
            response.headers['Location'], 'https://shop.example.com/')
        decide_events()

    # The tests

    def test_children_scheduling(self):
        """Children without event and negative children are due after their
        delay; positive children wait for their event"""
        self.start_scenario("Ann")

        before = dt.datetime.now()
        self.send_emails()
        after = dt.datetime.now()

        with inspecting():
            by_name = self.activities()
            for name, delay in [
                    ("Not opened", dt.timedelta(days=2)),
                    ("Not clicked", dt.timedelta(days=3)),
                    ("Follow-up", dt.timedelta(days=1)),
                    ]:
                with self.subTest(activity=name):
                    entry, = entries(by_name[name]).values()
                    self.assertEqual(entry.state, 'waiting')
                    self.assertAtAfter(entry.at, before, after, delay)
            for name in ["Opened", "Clicked"]:
                with self.subTest(activity=name):
                    entry, = entries(by_name[name]).values()
                    self.assertEqual(entry.state, 'waiting')
                    self.assertIsNone(entry.at)

    def test_positive_event_cancels_negative_twin(self):
        "Opening the email cancels the entry waiting for no opening"
        self.start_scenario("Ann", "Bob")
        self.send_emails()

        self.open_email("Ann")

        with inspecting():
            self.assertEqual(
                states(self.activities()["Not opened"]),
                {"Ann": 'cancelled', "Bob": 'waiting'})
        self.make_due("Opened", "Ann")
        self.process()
        with inspecting():
            by_name = self.activities()
            self.assertEqual(
                states(by_name["Opened"]), {"Ann": 'done', "Bob": 'waiting'})
            self.assertEqual(
                states(by_name["Not opened"]),
                {"Ann": 'cancelled', "Bob": 'waiting'})

    def test_due_negative_cancels_positive_twin(self):
        "When no opening came in time, the entry waiting for it is cancelled"
        self.start_scenario("Ann", "Bob")
        self.send_emails()
        self.make_due("Not opened", "Ann")

        self.process()

        with inspecting():
            by_name = self.activities()
            self.assertEqual(
                states(by_name["Not opened"]),
                {"Ann": 'done', "Bob": 'waiting'})
            self.assertEqual(
                states(by_name["Opened"]),
                {"Ann": 'cancelled', "Bob": 'waiting'})
            # the other event is not concerned
            self.assertEqual(
                states(by_name["Clicked"]),
                {"Ann": 'waiting', "Bob": 'waiting'})

    def test_email_opened(self):
        "Opening flags the email and makes the children on opening due"
        self.start_scenario("Ann", "Bob")
        self.send_emails()

        before = dt.datetime.now()
        self.open_email("Ann")
        after = dt.datetime.now()

        with inspecting():
            by_name = self.activities()
            by_party = entries(by_name["Email"])
            self.assertTrue(by_party["Ann"].email_opened)
            self.assertFalse(by_party["Ann"].email_clicked)
            self.assertFalse(by_party["Bob"].email_opened)
            opened = entries(by_name["Opened"])
            self.assertAtAfter(
                opened["Ann"].at, before, after, dt.timedelta(hours=1))
            self.assertIsNone(opened["Bob"].at)
            self.assertEqual(
                states(by_name["Not opened"]),
                {"Ann": 'cancelled', "Bob": 'waiting'})
            # the click children still wait
            clicked = entries(by_name["Clicked"])
            self.assertIsNone(clicked["Ann"].at)
            self.assertEqual(
                states(by_name["Not clicked"]),
                {"Ann": 'waiting', "Bob": 'waiting'})
            at = opened["Ann"].at

        # a second opening changes nothing
        self.open_email("Ann")
        with inspecting():
            by_name = self.activities()
            self.assertEqual(entries(by_name["Opened"])["Ann"].at, at)
            self.assertEqual(
                states(by_name["Opened"]),
                {"Ann": 'waiting', "Bob": 'waiting'})

    def test_email_clicked(self):
        "Clicking flags the email clicked and opened, and runs both children"
        self.start_scenario("Ann", "Bob")
        self.send_emails()

        before = dt.datetime.now()
        self.click("Ann")
        after = dt.datetime.now()

        with inspecting():
            by_name = self.activities()
            by_party = entries(by_name["Email"])
            self.assertTrue(by_party["Ann"].email_clicked)
            self.assertTrue(by_party["Ann"].email_opened)
            self.assertFalse(by_party["Bob"].email_clicked)
            self.assertFalse(by_party["Bob"].email_opened)
            clicked = entries(by_name["Clicked"])
            self.assertAtAfter(clicked["Ann"].at, before, after)
            self.assertIsNone(clicked["Bob"].at)
            opened = entries(by_name["Opened"])
            self.assertAtAfter(
                opened["Ann"].at, before, after, dt.timedelta(hours=1))
            for name in ["Not clicked", "Not opened"]:
                with self.subTest(activity=name):
                    self.assertEqual(
                        states(by_name[name]),
                        {"Ann": 'cancelled', "Bob": 'waiting'})
            ats = {
                n: entries(by_name[n])["Ann"].at
                for n in ["Clicked", "Opened"]}

        # clicking again, or opening afterwards, changes nothing
        self.click("Ann")
        self.open_email("Ann")
        with inspecting():
            by_name = self.activities()
            self.assertEqual({
                    n: entries(by_name[n])["Ann"].at
                    for n in ["Clicked", "Opened"]},
                ats)

    def test_event_children_follow_changes(self):
        "A click runs the children as they are when it happens"
        self.start_scenario("Ann", "Bob", "Cid")
        self.send_emails()
        self.click("Ann")

        self.write_activity("Clicked", {'delay': dt.timedelta(days=2)})
        before = dt.datetime.now()
        self.click("Bob")
        after = dt.datetime.now()

        with inspecting():
            clicked = entries(self.activities()["Clicked"])
            self.assertAtAfter(
                clicked["Bob"].at, before, after, dt.timedelta(days=2))

        self.write_activity("Not opened", {'on': None})
        self.click("Cid")

        # no longer waiting for an event, the activity is not cancelled
        with inspecting():
            self.assertEqual(
                states(self.activities()["Not opened"]),
                {"Ann": 'cancelled', "Bob": 'cancelled', "Cid": 'waiting'})

    def test_activity_statistics(self):
        "An email counts its done entries, its openings and its clicks"
        self.start_scenario("Ann", "Bob", "Cid", "Dan")
        with inspecting():
            email = self.activities()["Email"]
            self.assertEqual(email.record_count, 0)
            for name in [
                    'email_open_rate', 'email_click_rate',
                    'email_click_through_rate']:
                self.assertEqual(getattr(email, name), 0, msg=name)

        self.send_emails()
        self.open_email("Ann")
        self.open_email("Bob")
        self.click("Cid")

        with inspecting():
            by_name = self.activities()
            email = by_name["Email"]
            self.assertEqual(email.record_count, 4)
            self.assertEqual(email.email_opened, 3)
            self.assertEqual(email.email_clicked, 1)
            self.assertEqual(email.email_open_rate, 0.75)
            self.assertEqual(email.email_click_rate, 0.25)
            self.assertEqual(email.email_click_through_rate, 0.33)
            # entries that wait or are cancelled are not counted
            not_opened = by_name["Not opened"]
            self.assertEqual(not_opened.record_count, 0)
            self.assertEqual(not_opened.email_open_rate, 0)
