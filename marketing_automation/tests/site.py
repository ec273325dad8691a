# SPDX-License-Identifier: GPL-3.0-or-later
"""A site module written for Tryton's own marketing_automation, as a site
writes one: it overrides the methods of the Python API with their upstream
signatures and calls ``super()``.

It is registered only where trytond's ``tests`` module is activated too
(``[register tests]`` of tryton.cfg), so that the other tests run the
module without it.  Each override records its call in ``CALLS``; some
change what the recipient sees:

- ``Activity._email_recipient`` sends the emails of the parties whose name
  starts with "Desk" to the site's front desk;
- ``Activity.email_context`` adds ``site_scenario``, read from the
  marketing record it is given;
- ``Activity._email`` adds the header ``X-Site``;
- ``Record.language`` writes to the parties whose name starts with "Aimé"
  in French;
- ``RecordActivity.set_delay`` makes the activities named "Later" wait one
  more hour.
"""
import datetime

from trytond.pool import PoolMeta

CALLS = []
DESK = 'Front Desk <desk@site.example>'
LATER = datetime.timedelta(hours=1)


def called(name, *args):
    CALLS.append((name, *args))


def ids(records):
    return sorted(int(r) for r in records)


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    @classmethod
    def trigger(cls, scenarios=None):
        called('Scenario.trigger', scenarios)
        super().trigger(scenarios)


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    def execute(self, record_activity, **kwargs):
        called('Activity.execute', self.name, record_activity.__name__,
            record_activity.id, sorted(kwargs))
        super().execute(record_activity, **kwargs)

    def execute_send_email(self, record_activity, **kwargs):
        called('Activity.execute_send_email', self.name, record_activity.id)
        super().execute_send_email(record_activity, **kwargs)

    def _email_recipient(self, record):
        called('Activity._email_recipient', record.__name__, record.id)
        if record.rec_name.startswith("Desk"):
            return DESK
        return super()._email_recipient(record)

    def email_context(self, record):
        called('Activity.email_context', record.__name__, record.id)
        context = super().email_context(record)
        context['site_scenario'] = record.scenario.rec_name
        return context

    def _email(self, sender, to, subject, content):
        called('Activity._email', to, subject)
        message = super()._email(sender, to, subject, content)
        message['X-Site'] = 'site'
        return message


class Record(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record'

    def eval(self, expression):
        called('Record.eval', self.id, expression)
        return super().eval(expression)

    @property
    def language(self):
        called('Record.language', self.id)
        if self.record.rec_name.startswith("Aimé"):
            return 'fr'
        return super().language

    @classmethod
    def block(cls, records):
        called('Record.block', ids(records))
        super().block(records)


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    @classmethod
    def get(cls, record, activity):
        called('RecordActivity.get', record.id, activity.name)
        return super().get(record, activity)

    def set_delay(self):
        called('RecordActivity.set_delay', self.activity.name)
        super().set_delay()
        if self.activity.name == "Later":
            self.at += LATER

    @classmethod
    def process(cls):
        called('RecordActivity.process')
        super().process()

    @classmethod
    def do(cls, record_activities, **kwargs):
        called('RecordActivity.do', ids(record_activities))
        super().do(record_activities, **kwargs)

    @classmethod
    def cancel(cls, record_activities):
        called('RecordActivity.cancel', ids(record_activities))
        super().cancel(record_activities)

    @classmethod
    def _cancel_opposite(cls, record_activities):
        called('RecordActivity._cancel_opposite', ids(record_activities))
        super()._cancel_opposite(record_activities)

    @classmethod
    def on_email_opened(cls, record_activities):
        called('RecordActivity.on_email_opened', ids(record_activities))
        super().on_email_opened(record_activities)

    @classmethod
    def on_email_clicked(cls, record_activities):
        called('RecordActivity.on_email_clicked', ids(record_activities))
        super().on_email_clicked(record_activities)

    def _on_event(self, event):
        called('RecordActivity._on_event', self.id, event)
        super()._on_event(event)
