# SPDX-License-Identifier: GPL-3.0-or-later
"""A module that adds an event and a gate to the engine, each with one
declaration (registered with the site module, see tests/test_site.py):

- the action ``record_visit`` (of extension.py) produces the event
  ``visit_returned``, flagged in the column of that name;
- the gate ``quiet`` holds the entries of the parties whose name starts
  with "Quiet" until the next day.
"""
import datetime

from trytond.model import fields
from trytond.modules.marketing_automation.gates import Gate, Verdict
from trytond.modules.marketing_automation.marketing_automation import (
    EventKind)
from trytond.pool import Pool, PoolMeta


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.declare_event(EventKind(
                'visit_returned', 'record_visit', "Visitor Returned",
                "Visitor Not Returned"))


class QuietGate(Gate):
    "Holds the entries of the quiet parties until the next day"
    name = 'quiet'
    label = "Quiet Party"

    def judge(self, entries):
        Party = Pool().get('party.party')
        verdict = Verdict()
        parties = {
            e.id: int(e.reference.split(',')[1]) for e in entries
            if e.reference.startswith('party.party,')}
        quiet = {
            p.id for p in Party.browse(list(set(parties.values())))
            if p.name.startswith("Quiet")}
        until = self.batch.now + datetime.timedelta(days=1)
        for entry_id, party_id in parties.items():
            if party_id in quiet:
                verdict.hold(entry_id, self.name, until)
        return verdict


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    visit_returned = fields.Boolean("Visitor Returned", readonly=True)

    @classmethod
    def default_visit_returned(cls):
        return False

    @classmethod
    def _new_values(cls):
        return {**super()._new_values(), 'visit_returned': False}

    @classmethod
    def gates(cls):
        return {**super().gates(), QuietGate.name: QuietGate}
