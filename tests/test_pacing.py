# SPDX-License-Identifier: GPL-3.0-or-later
"""Respecting the recipient: send windows on the recipient's wall clock,
and a frequency cap across all the scenarios.

A marketer lets the emails of a scenario leave on working days during
office hours only, in the time zone of each recipient; the site caps how
many marketing emails a party receives a day and a week.  An email due
outside its window, or over the cap, waits without being consumed, shows
why and until when, and goes once it may; one that the cap would hold back
for too long is done without being sent, counted apart as capped.

The clock of the module is moved (``tools.now``), never slept; the emails go to
a real SMTP server on the loopback; two processes race for the last slot
of the cap on PostgreSQL.
"""
import datetime as dt
import os
import select
import subprocess
import sys
import tempfile
import unittest
import uuid
import zoneinfo
from contextlib import contextmanager
from unittest import mock

from trytond import backend
from trytond.model.exceptions import ValidationError
from trytond.modules.marketing_automation import pacing
from trytond.modules.marketing_automation import tools as module_tools
from trytond.pool import Pool
from trytond.tests.test_tryton import TestCase, activate_module, drop_db
from trytond.transaction import Transaction

from .tools import (
    BASE, SENDER, SendingTestMixin, committed, create_parties, inspecting,
    message)

LOGGER = 'trytond.modules.marketing_automation'
UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo('Europe/Paris')
TOKYO = zoneinfo.ZoneInfo('Asia/Tokyo')
WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday']
# Saturday 9 January 2027, noon in Paris
SATURDAY = dt.datetime(2027, 1, 9, 11, 0)
# Monday 11 January 2027, 9:00 in Paris
MONDAY_9 = dt.datetime(2027, 1, 11, 8, 0)


def utc(wall, tz):
    "The naive UTC moment of the wall clock time of tz"
    return wall.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


@contextmanager
def clock(moment):
    "Set the clock of the engine to moment (naive UTC)"
    with mock.patch.object(module_tools, 'now', return_value=moment):
        yield


def news(name, **values):
    return {
        'name': name,
        'action': 'send_email',
        'email_title': f"{name} for ${{record.name}}",
        'email_template': f'<p>{name}: hello ${{record.name}}</p>',
        **values,
        }


class WindowTestCase(unittest.TestCase):
    "Send windows on a wall clock, without the database"

    def test_refused(self):
        "A window without a day or an hour is refused"
        with self.assertRaises(pacing.WindowError) as raised:
            pacing.window([], dt.time(9), dt.time(17))
        self.assertEqual(raised.exception.problem, 'no_day')
        with self.assertRaises(pacing.WindowError) as raised:
            pacing.window(['monday'], dt.time(9), dt.time(9))
        self.assertEqual(raised.exception.problem, 'no_hour')

    def test_whole_day(self):
        "A window without hours, or from midnight to midnight, is open all day"
        for start, end in [(None, None), (dt.time(0), dt.time(0))]:
            window = pacing.window(['monday'], start, end)
            self.assertTrue(pacing.is_open(
                    window, dt.datetime(2027, 1, 11, 0, 0)))
            self.assertTrue(pacing.is_open(
                    window, dt.datetime(2027, 1, 11, 23, 59)))
            self.assertFalse(pacing.is_open(
                    window, dt.datetime(2027, 1, 12, 0, 0)))

    def test_office_hours(self):
        "A window opens at its start and closes at its end"
        window = pacing.window(WEEKDAYS, dt.time(9), dt.time(17))
        friday = dt.datetime(2027, 1, 15)
        self.assertFalse(pacing.is_open(window, friday.replace(hour=8)))
        self.assertTrue(pacing.is_open(window, friday.replace(hour=9)))
        self.assertTrue(pacing.is_open(
                window, friday.replace(hour=16, minute=59)))
        self.assertFalse(pacing.is_open(window, friday.replace(hour=17)))
        self.assertFalse(pacing.is_open(
                window, dt.datetime(2027, 1, 16, 12)))

    def test_across_midnight(self):
        "A window that closes before it opens closes the next morning"
        window = pacing.window(['friday'], dt.time(22), dt.time(6))
        self.assertTrue(pacing.is_open(window, dt.datetime(2027, 1, 15, 23)))
        # the morning after the Friday, although Saturday is not a day
        self.assertTrue(pacing.is_open(
                window, dt.datetime(2027, 1, 16, 5, 59)))
        self.assertFalse(pacing.is_open(window, dt.datetime(2027, 1, 16, 6)))
        self.assertFalse(pacing.is_open(window, dt.datetime(2027, 1, 16, 23)))
        # the morning of a Friday belongs to Thursday's night
        self.assertFalse(pacing.is_open(window, dt.datetime(2027, 1, 15, 3)))
        self.assertEqual(
            pacing.next_opening(window, UTC, dt.datetime(2027, 1, 16, 7)),
            dt.datetime(2027, 1, 22, 22))

    def test_next_opening(self):
        "Closed, a window waits for its next opening in its time zone"
        window = pacing.window(WEEKDAYS, dt.time(9), dt.time(17))
        self.assertEqual(
            pacing.next_opening(window, PARIS, SATURDAY),
            utc(dt.datetime(2027, 1, 11, 9), PARIS))
        self.assertEqual(
            pacing.next_opening(window, TOKYO, SATURDAY),
            utc(dt.datetime(2027, 1, 11, 9), TOKYO))
        # Monday evening in Paris: Tuesday morning
        self.assertEqual(
            pacing.next_opening(window, PARIS, dt.datetime(2027, 1, 11, 17)),
            utc(dt.datetime(2027, 1, 12, 9), PARIS))

    def test_summer_time(self):
        """A window whose start the change to summer time skips opens when
        the clock jumps; one that the jump skips whole opens the next week"""
        # Paris jumps from 2:00 to 3:00 on Sunday 28 March 2027
        jump = utc(dt.datetime(2027, 3, 28, 3, 0), PARIS)
        self.assertEqual(jump, dt.datetime(2027, 3, 28, 1, 0))
        saturday = dt.datetime(2027, 3, 27, 12)
        window = pacing.window(['sunday'], dt.time(2, 30), dt.time(4))
        self.assertEqual(pacing.next_opening(window, PARIS, saturday), jump)
        skipped = pacing.window(['sunday'], dt.time(2), dt.time(2, 30))
        self.assertEqual(
            pacing.next_opening(skipped, PARIS, saturday),
            utc(dt.datetime(2027, 4, 4, 2), PARIS))
        # office hours keep their wall clock time across the change
        office = pacing.window(WEEKDAYS, dt.time(9), dt.time(17))
        self.assertEqual(
            pacing.next_opening(office, PARIS, saturday),
            dt.datetime(2027, 3, 29, 7, 0))
        self.assertEqual(
            pacing.next_opening(office, PARIS, dt.datetime(2027, 3, 20, 12)),
            dt.datetime(2027, 3, 22, 8, 0))

    def test_winter_time(self):
        "A window in the hour that winter time repeats opens twice"
        # Paris goes back from 3:00 to 2:00 on Sunday 31 October 2027
        window = pacing.window(['sunday'], dt.time(2), dt.time(2, 30))
        first = dt.datetime(2027, 10, 31, 0, 0)
        second = dt.datetime(2027, 10, 31, 1, 0)
        self.assertEqual(
            first, dt.datetime(2027, 10, 31, 2, tzinfo=PARIS).astimezone(
                UTC).replace(tzinfo=None))
        self.assertEqual(
            second, dt.datetime(
                2027, 10, 31, 2, fold=1, tzinfo=PARIS).astimezone(
                UTC).replace(tzinfo=None))
        self.assertEqual(
            pacing.next_opening(window, PARIS, dt.datetime(2027, 10, 30)),
            first)
        # 2:45 the first time: closed, until 2:00 comes again
        self.assertFalse(pacing.is_open(
                window, pacing.wall_clock(first.replace(minute=45), PARIS)))
        self.assertEqual(
            pacing.next_opening(window, PARIS, first.replace(minute=45)),
            second)


class CapRulesTestCase(unittest.TestCase):
    "The rules of the frequency cap, without the database"

    def test_parse(self):
        "Rules are a number of emails per period"
        self.assertEqual(pacing.parse_caps('2/day, 5/week, 3 / 12 hours'), [
                pacing.Cap(2, dt.timedelta(days=1)),
                pacing.Cap(5, dt.timedelta(days=7)),
                pacing.Cap(3, dt.timedelta(hours=12)),
                ])
        self.assertEqual(pacing.parse_caps(''), [])

    def test_refused(self):
        "A cap of 0, a period of 0 or negative, or a riddle is refused"
        for rule, problem in [
                ('0/day', 'limit'),
                ('-1/day', 'limit'),
                ('2/0 days', 'period'),
                ('2/-1 day', 'period'),
                ('2/fortnight', 'malformed'),
                ('two a day', 'malformed'),
                ]:
            with self.subTest(rule=rule):
                with self.assertRaises(pacing.CapError) as raised:
                    pacing.parse_caps('5/week, ' + rule)
                self.assertEqual(raised.exception.problem, problem)
                self.assertEqual(raised.exception.rule, rule)

    def test_share(self):
        "The emails that fit go now; the next one waits for a slot to free"
        caps = pacing.parse_caps('2/day, 5/week')
        now = dt.datetime(2027, 1, 10, 12)
        yesterday = now - dt.timedelta(hours=20)
        self.assertEqual(
            pacing.share(caps, [yesterday], now, 3),
            (1, yesterday + dt.timedelta(days=1)))
        self.assertEqual(pacing.share(caps, [], now, 2), (2, None))
        week = [now - dt.timedelta(days=d) for d in (1.5, 2.5, 3.5, 4.5, 5.5)]
        self.assertEqual(
            pacing.share(caps, week, now, 1),
            (0, week[-1] + dt.timedelta(days=7)))


class PacingTestCase(SendingTestMixin, TestCase):
    "Send windows and the frequency cap in the engine"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('queue', 'worker'): 'False',
                })
        self.addresses = {}

    # Setting things up

    def address(self, name):
        "A new email address of the party name, kept in self.addresses"
        address = self.addresses[name] = (
            f'{name.lower()}.{uuid.uuid4().hex[:8]}@example.com')
        return address

    def start_scenario(self, party_ids, activities, **values):
        return self.running_scenario(
            "Pacing", [('id', 'in', party_ids)], activities, **values)

    def office_hours(self, **values):
        "The send window of office hours in Paris on working days"
        return {
            'send_window': True,
            'window_days': WEEKDAYS,
            'window_start': dt.time(9),
            'window_end': dt.time(17),
            'window_timezone': 'Europe/Paris',
            **values,
            }

    def trigger(self, moment):
        with clock(moment), committed():
            Pool().get('marketing.automation.scenario').trigger()

    def process(self, moment):
        with clock(moment), committed():
            Pool().get('marketing.automation.record.activity').process()

    # Looking at both ends

    def received(self):
        "The names of the parties the server received a message for"
        names = {a: n for n, a in self.addresses.items()}
        return [
            names[r] for m in self.smtp.received() for r in m.rcpt_tos
            if r in names]

    def entries(self, scenario_id, activity=None):
        "The entries of the scenario by party name"
        RecordActivity = Pool().get('marketing.automation.record.activity')
        domain = [('record.scenario', '=', scenario_id)]
        if activity:
            domain.append(('activity.name', '=', activity))
        return {
            e.record.record.name: e
            for e in RecordActivity.search(domain)}

    def waiting(self, scenario_id, moment):
        """Why, since when and until when each entry of the scenario waits,
        and how many wait for each reason, as the scenario shows them"""
        with clock(moment), inspecting():
            Scenario = Pool().get('marketing.automation.scenario')
            scenario = Scenario(scenario_id)
            return ({
                    n: (e.state, e.waiting_for, e.waiting_until)
                    for n, e in self.entries(scenario_id).items()},
                (scenario.waiting_window, scenario.waiting_cap))

    # Send windows

    def test_window_holds_then_sends(self):
        """An email due on a Saturday waits for Monday 9:00 on the
        recipient's clock, and goes then, in the order of its due date"""
        ids = create_parties("Ada", "Bea", "Cyd", email=self.address)
        scenario = self.start_scenario(
            ids, [news("Hello")], **self.office_hours())
        self.trigger(SATURDAY)
        # the entries became due at different moments, not in their order
        with committed():
            RecordActivity = Pool().get('marketing.automation.record.activity')
            for name, hour in [("Ada", 10), ("Bea", 9), ("Cyd", 11)]:
                entry = self.entries(scenario)[name]
                RecordActivity.write([entry], {
                        'at': SATURDAY.replace(hour=hour)})

        self.process(SATURDAY)
        self.assertEqual(self.received(), [])
        monday = utc(dt.datetime(2027, 1, 11, 9), PARIS)
        entries, counts = self.waiting(scenario, SATURDAY)
        self.assertEqual(entries, {
                n: ('waiting', 'window', monday)
                for n in ["Ada", "Bea", "Cyd"]})
        self.assertEqual(counts, (3, 0))
        with inspecting():
            entry = self.entries(scenario)["Ada"]
            self.assertEqual(entry.waiting_since, SATURDAY)
            self.assertEqual(entry.at, SATURDAY.replace(hour=10))
            Activity = Pool().get('marketing.automation.activity')
            activity, = Activity.search([('parent', '=', (
                            'marketing.automation.scenario', scenario))])
            with clock(SATURDAY):
                self.assertEqual(Activity(activity.id).waiting_window, 3)

        # Sunday: still closed, and process does not take them again
        with inspecting():
            RecordActivity = Pool().get('marketing.automation.record.activity')
        with mock.patch.object(
                RecordActivity, 'do', side_effect=AssertionError("taken")):
            self.process(SATURDAY + dt.timedelta(days=1))
        self.process(monday)
        self.assertEqual(self.received(), ["Bea", "Ada", "Cyd"])
        entries, counts = self.waiting(scenario, monday)
        self.assertEqual(entries, {
                n: ('done', None, None) for n in ["Ada", "Bea", "Cyd"]})
        self.assertEqual(counts, (0, 0))

    def test_recipient_time_zone(self):
        """The window opens on the recipient's clock: Monday 9:00 in Tokyo
        is still Sunday in Paris"""
        tokyo, = create_parties(
            "Ken", marketing_timezone='Asia/Tokyo', email=self.address)
        paris, = create_parties("Zoe", email=self.address)
        scenario = self.start_scenario(
            [tokyo, paris], [news("Hello")], **self.office_hours())
        monday_tokyo = utc(dt.datetime(2027, 1, 11, 9, 30), TOKYO)
        self.trigger(monday_tokyo)
        self.process(monday_tokyo)

        self.assertEqual(self.received(), ["Ken"])
        entries, _ = self.waiting(scenario, monday_tokyo)
        self.assertEqual(entries["Zoe"], (
                'waiting', 'window', utc(dt.datetime(2027, 1, 11, 9), PARIS)))

    def test_activity_window(self):
        """An activity sends at any time, or in its own window, whatever the
        window of the scenario"""
        ids = create_parties("Amy", "Bob", email=self.address)
        evening = {
            'send_window': 'activity',
            'window_days': ['saturday'],
            'window_start': dt.time(18),
            'window_end': dt.time(23),
            'window_timezone': 'Europe/Paris',
            }
        scenario = self.start_scenario(ids, [
                news("Confirmation", send_window='anytime'),
                news("Evening", **evening),
                news("Office"),
                ], **self.office_hours())
        self.trigger(SATURDAY)
        self.process(SATURDAY)
        self.assertEqual(sorted(self.received()), ["Amy", "Bob"])

        saturday_evening = utc(dt.datetime(2027, 1, 9, 18), PARIS)
        with inspecting():
            for activity, expected in [
                    ("Confirmation", ('done', None, None)),
                    ("Evening", ('waiting', 'window', saturday_evening)),
                    ("Office", ('waiting', 'window', utc(
                                dt.datetime(2027, 1, 11, 9), PARIS))),
                    ]:
                for entry in self.entries(scenario, activity).values():
                    self.assertEqual(
                        (entry.state, entry.waiting_for,
                            entry.waiting_until),
                        expected, msg=activity)
        self.smtp.clear()
        self.process(saturday_evening)
        self.assertEqual(sorted(self.received()), ["Amy", "Bob"])

    def test_window_across_midnight_and_summer_time(self):
        """A night window on the recipient's clock, on the night Paris
        jumps to summer time"""
        ids = create_parties("Night", email=self.address)
        scenario = self.start_scenario(ids, [news("Late")], **{
                'send_window': True,
                'window_days': ['saturday'],
                'window_start': dt.time(23),
                'window_end': dt.time(2, 30),
                'window_timezone': 'Europe/Paris',
                })
        # Sunday 28 March 2027, 3:10 in Paris: the clock jumped from 2:00
        # to 3:00, so the window of Saturday night closed at the jump
        after = utc(dt.datetime(2027, 3, 28, 3, 10), PARIS)
        self.trigger(after)
        self.process(after)
        self.assertEqual(self.received(), [])
        entries, _ = self.waiting(scenario, after)
        self.assertEqual(entries["Night"], (
                'waiting', 'window',
                utc(dt.datetime(2027, 4, 3, 23), PARIS)))
        # the next Saturday at 23:30 in summer time
        self.process(utc(dt.datetime(2027, 4, 3, 23, 30), PARIS))
        self.assertEqual(self.received(), ["Night"])

    def test_window_added_to_running_scenario(self):
        "Entries already due when a window is added wait, then go"
        ids = create_parties("Ida", "Ivo", email=self.address)
        scenario = self.start_scenario(ids, [news("Hello")])
        self.trigger(SATURDAY)
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.write(
                [Scenario(scenario)], self.office_hours())
        self.process(SATURDAY + dt.timedelta(hours=1))
        self.assertEqual(self.received(), [])
        self.process(MONDAY_9)
        self.assertEqual(sorted(self.received()), ["Ida", "Ivo"])

    def test_window_refused(self):
        "A window without a day or an hour, or in an unknown zone, is refused"
        for values, expected in [
                ({'window_days': []},
                    message('msg_window_no_day', record="Refused")),
                ({'window_start': dt.time(9), 'window_end': dt.time(9)},
                    message('msg_window_no_hour', record="Refused",
                        time='09:00')),
                ({'window_timezone': 'Mars/Olympus_Mons'}, "Time Zone"),
                ]:
            with self.subTest(values=values):
                with committed():
                    Scenario = Pool().get('marketing.automation.scenario')
                    with self.assertRaises(ValidationError) as raised:
                        Scenario.create([{
                                    'name': "Refused",
                                    **self.office_hours(**values),
                                    }])
                    self.assertIn(expected, raised.exception.message)
                    with self.assertRaises(ValidationError):
                        Scenario.create([{
                                    'name': "Refused",
                                    'activities': [('create', [news(
                                                    "Refused",
                                                    **self.office_hours(
                                                        send_window='activity',
                                                        **values))])],
                                    }])
                    Transaction().rollback()
        # an empty window is fine while the window is off
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.create([{
                        'name': "Off", 'send_window': False,
                        'window_days': []}])
            Transaction().rollback()

    # The frequency cap

    def test_cap_across_scenarios(self):
        """A party in two scenarios gets one email a day: the one due first
        goes, the other waits a day and goes then"""
        self.configure({('marketing', 'frequency_cap'): '1/day'})
        ids = create_parties("Cap", email=self.address)
        early = self.start_scenario(ids, [news("Early")])
        late = self.start_scenario(ids, [news("Late", delay=dt.timedelta(
                        minutes=10))])
        self.trigger(SATURDAY)
        later = SATURDAY + dt.timedelta(minutes=30)
        self.process(later)

        self.assertEqual(self.received(), ["Cap"])
        with inspecting():
            self.assertEqual(
                self.entries(early)["Cap"].state, 'done')
        entries, counts = self.waiting(late, later)
        self.assertEqual(entries["Cap"], (
                'waiting', 'cap', later + dt.timedelta(days=1)))
        self.assertEqual(counts, (0, 1))

        # nothing fits before the day is over
        self.process(later + dt.timedelta(hours=23))
        self.assertEqual(self.received(), ["Cap"])
        self.process(later + dt.timedelta(days=1))
        self.assertEqual(self.received(), ["Cap", "Cap"])
        entries, counts = self.waiting(late, later + dt.timedelta(days=1))
        self.assertEqual(entries["Cap"][:2], ('done', None))
        self.assertEqual(counts, (0, 0))

    def test_cap_several_rules(self):
        "2 a day and 3 a week: the week's rule holds the fourth email"
        self.configure({('marketing', 'frequency_cap'): '2/day, 3/week'})
        ids = create_parties("Weekly", email=self.address)
        scenarios = [
            self.start_scenario(ids, [news(f"News {i}")]) for i in range(4)]
        self.trigger(SATURDAY)
        self.process(SATURDAY)
        self.assertEqual(self.received(), ["Weekly"] * 2)
        sunday = SATURDAY + dt.timedelta(days=1)
        self.process(sunday)
        self.assertEqual(self.received(), ["Weekly"] * 3)
        entries, _ = self.waiting(scenarios[3], sunday)
        self.assertEqual(entries["Weekly"], (
                'waiting', 'cap', SATURDAY + dt.timedelta(days=7)))

    def test_cap_counts_the_outbox(self):
        """An email that waits in the outbox for the mail server counts:
        the next one waits for the cap"""
        self.configure({('marketing', 'frequency_cap'): '1/day'})
        ids = create_parties("Outbox", email=self.address)
        first = self.start_scenario(ids, [news("First")])
        self.trigger(SATURDAY)
        self.smtp.stop()
        self.process(SATURDAY)
        with inspecting():
            Email = Pool().get('marketing.automation.email')
            self.assertEqual(Email.search([
                        ('record_activity.record.scenario', '=', first),
                        ], count=True), 1)
        second = self.start_scenario(ids, [news("Second")])
        self.trigger(SATURDAY)
        self.process(SATURDAY + dt.timedelta(minutes=1))
        entries, _ = self.waiting(second, SATURDAY)
        self.assertEqual(entries["Outbox"][:2], ('waiting', 'cap'))

    def test_cap_exempt(self):
        "An exempt scenario goes whatever the cap, and does not count"
        self.configure({('marketing', 'frequency_cap'): '1/day'})
        ids = create_parties("Exempt", email=self.address)
        self.start_scenario(ids, [news("Offer")])
        self.start_scenario(ids, [news("Confirm", delay=dt.timedelta(
                        hours=1))], frequency_cap_exempt=True)
        self.start_scenario(ids, [news("Next offer", delay=dt.timedelta(
                        days=1, minutes=30))])
        self.trigger(SATURDAY)
        for delay, count in [
                (dt.timedelta(), 1),
                (dt.timedelta(hours=1), 2),
                # the confirmation of an hour later does not hold it
                (dt.timedelta(days=1, minutes=30), 3),
                ]:
            self.process(SATURDAY + delay)
            self.assertEqual(self.received(), ["Exempt"] * count)

    def test_cap_gives_up(self):
        """An email that the cap would hold back longer than the delay is
        done without being sent, and counted apart as capped"""
        self.configure({
                ('marketing', 'frequency_cap'): '1/day',
                ('marketing', 'frequency_cap_delay'): str(12 * 60 * 60),
                })
        ids = create_parties("Gives", "Up", email=self.address)
        self.start_scenario(ids, [news("Sent")])
        scenario = self.start_scenario(ids, [news("Capped", delay=dt.timedelta(
                        minutes=1), children=[('create', [news("After")])])])
        self.trigger(SATURDAY)
        self.process(SATURDAY + dt.timedelta(minutes=5))

        self.assertEqual(sorted(self.received()), ["Gives", "Up"])
        capped = message('msg_record_activity_capped')
        with inspecting():
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            Reporting = pool.get('marketing.automation.reporting.activity')
            entries = self.entries(scenario, "Capped")
            for entry in entries.values():
                self.assertEqual(
                    (entry.state, entry.email_sent, entry.email_capped,
                        entry.error),
                    ('done', False, True, capped))
            activity = entries["Up"].activity
            activity = Activity(activity.id)
            self.assertEqual(
                (activity.record_count, activity.email_sent,
                    activity.email_capped),
                (2, 0, 2))
            with Transaction().set_context(
                    from_date=None, to_date=None, period='month'):
                row, = Reporting.search([('activity', '=', activity.id)])
            self.assertEqual((row.email_sent, row.email_capped), (0, 2))
            # the records went on to the child, as after a refused email
            self.assertEqual(
                sorted(self.entries(scenario, "After")), ["Gives", "Up"])

    def test_cap_added_to_running_scenario(self):
        "Entries due when a cap is configured wait, then go, none is lost"
        ids = create_parties("Run", email=self.address)
        scenarios = [
            self.start_scenario(ids, [news(f"Running {i}")])
            for i in range(3)]
        self.trigger(SATURDAY)
        self.configure({('marketing', 'frequency_cap'): '1/day'})
        for day in range(3):
            self.process(SATURDAY + dt.timedelta(days=day))
            self.assertEqual(self.received(), ["Run"] * (day + 1))
        with inspecting():
            for scenario in scenarios:
                self.assertEqual(
                    self.entries(scenario)["Run"].email_sent, True)

    def test_cap_refused(self):
        """A cap of 0, a period of 0 or a negative delay stops the capped
        activities with the reason, their entries waiting"""
        ids = create_parties("Bad", email=self.address)
        scenario = self.start_scenario(ids, [news("Bad cap")])
        self.trigger(SATURDAY)
        for option, value, expected in [
                ('frequency_cap', '2/day, 0/week',
                    message('msg_frequency_cap_limit', rule='0/week')),
                ('frequency_cap', '2/-1 day',
                    message('msg_frequency_cap_period', rule='2/-1 day')),
                ('frequency_cap', 'twice a day',
                    message(
                        'msg_frequency_cap_malformed', rule='twice a day')),
                ('frequency_cap_delay', '-5',
                    message('msg_frequency_cap_delay', rule='-5')),
                ]:
            with self.subTest(option=option, value=value):
                self.configure({
                        ('marketing', 'frequency_cap'): '1/day',
                        ('marketing', option): value,
                        })
                with self.assertLogs(LOGGER, 'ERROR'):
                    self.process(SATURDAY)
                with inspecting():
                    entry = self.entries(scenario)["Bad"]
                    self.assertEqual(entry.state, 'waiting')
                    self.assertEqual(entry.activity.error, expected)
                with committed():
                    Activity = Pool().get('marketing.automation.activity')
                    Activity.resume([Activity(entry.activity.id)])
        self.assertEqual(self.received(), [])
        self.configure({
                ('marketing', 'frequency_cap'): '1/day',
                ('marketing', 'frequency_cap_delay'): '3600',
                })
        self.process(SATURDAY)
        self.assertEqual(self.received(), ["Bad"])

    def test_window_and_cap(self):
        """Over the cap at the opening of the window, an email waits for
        the cap, then for the window"""
        self.configure({('marketing', 'frequency_cap'): '1/day'})
        ids = create_parties("Both", email=self.address)
        self.start_scenario(ids, [news("First")], **self.office_hours())
        second = self.start_scenario(
            ids, [news("Second")], **self.office_hours())
        self.trigger(SATURDAY)
        self.process(SATURDAY)
        self.process(MONDAY_9)
        self.assertEqual(self.received(), ["Both"])
        entries, counts = self.waiting(second, MONDAY_9)
        self.assertEqual(entries["Both"], (
                'waiting', 'cap', MONDAY_9 + dt.timedelta(days=1)))
        self.assertEqual(counts, (0, 1))
        with inspecting():
            # waiting since the first time the cap held it
            self.assertEqual(
                self.entries(second)["Both"].waiting_since, MONDAY_9)
        self.process(MONDAY_9 + dt.timedelta(days=1))
        self.assertEqual(self.received(), ["Both", "Both"])

    @unittest.skipIf(backend.name == 'sqlite', (
            "races processes on a shared database with row locks "
            "(PostgreSQL); the SQLite test database lives in the memory "
            "of the test process"))
    def test_two_workers_one_slot(self):
        """Two workers doing the emails of two scenarios to the same parties
        at the same moment let one email a day through to each"""
        names = ['race%03d' % i for i in range(100)]
        ids = create_parties(*names, email=self.address)
        scenarios = [
            self.start_scenario(ids, [news(f"Race {i}")]) for i in range(2)]
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
        with inspecting():
            work = [
                [e.id for e in self.entries(s).values()] for s in scenarios]
        workers = [self.start_worker(w) for w in work]
        self.go(*workers)
        for worker in workers:
            self.assertFinished(worker)

        self.assertEqual(sorted(self.received()), names)
        with inspecting():
            states = [
                {e.state for e in self.entries(s).values()}
                for s in scenarios]
            waiting = [
                e.waiting_for for s in scenarios
                for e in self.entries(s).values() if e.state == 'waiting']
        self.assertEqual(waiting, ['cap'] * len(names))
        self.assertIn({'done'}, states)

    # Workers

    def start_worker(self, entry_ids):
        "Start a process that does the entries as a worker, once told to go"
        env = dict(os.environ,
            TRYTOND_EMAIL__URI=self.smtp.uri(timeout=5),
            TRYTOND_MARKETING__FREQUENCY_CAP='1/day',
            TRYTOND_MARKETING__AUTOMATION_BASE=BASE,
            TRYTOND_MARKETING__EMAIL_FROM=SENDER,
            TRYTOND_QUEUE__WORKER='False')
        errors = tempfile.TemporaryFile(mode='w+')
        self.addCleanup(errors.close)
        process = subprocess.Popen(
            [sys.executable, '-c', WORKER,
                ','.join(map(str, entry_ids))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            env=env, text=True)
        process.errors = errors
        self.addCleanup(self.end_process, process)
        return process

    def end_process(self, process):
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()

    def output(self, process):
        process.errors.seek(0)
        return process.errors.read()

    def go(self, *processes):
        "Tell the processes to go together once they are all ready"
        for process in processes:
            ready, _, _ = select.select([process.stdout], [], [], 60)
            if not ready or process.stdout.readline().strip() != 'ready':
                self.fail(
                    "the process did not start:\n" + self.output(process))
        for process in processes:
            process.stdin.write('go\n')
            process.stdin.flush()

    def assertFinished(self, process, timeout=60):
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            self.fail("the process did not finish:\n" + self.output(process))
        self.assertEqual(status, 0, msg=self.output(process))


# A worker: it does the record activities given as its argument in a
# transaction retried on the errors of concurrent access, as trytond-worker
# runs a task, once the test says go, then the deliveries it queued.
WORKER = '''
import os
import sys
import time

from trytond import backend, config
from trytond.pool import Pool
from trytond.transaction import Transaction
from trytond.worker import run_task

database = os.environ['DB_NAME']
ids = [int(i) for i in sys.argv[1].split(',')]
pool = Pool(database)
with Transaction().start(database, 0, readonly=True):
    pool.init()
print('ready', flush=True)
sys.stdin.readline()

retry = config.getint('database', 'retry')
for count in range(retry + 1):
    try:
        with Transaction().start(database, 0):
            pool.get('marketing.automation.record.activity').do(ids)
        break
    except backend.DatabaseOperationalError:
        if count == retry:
            raise
        time.sleep(0.02 * (count + 1))
tasks = Transaction().tasks
while tasks:
    run_task(database, tasks.pop())
'''
