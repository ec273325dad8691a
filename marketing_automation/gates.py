# SPDX-License-Identifier: GPL-3.0-or-later
"""The gates that due entries pass before they are done.

A due entry (waiting, past its time, its record not blocked, its scenario
running) is done only once every gate lets it go.  Each gate is a class
that only *answers*: which of the entries it is shown it holds (they stay
waiting, until a time or until it lets them go), which it settles
otherwise (the record leaves its scenario, the entry is done without its
action) and which it stops because their activity or scenario is at fault.
The engine (``RecordActivity._filter_due``) asks the gates in the order of
``RecordActivity.GATES``, shows each one only what the gates before let
through, and then does every write itself, in one place.

A gate may also declare the work it needs before each run of the process
cron (``periodic``) and note the entries that passed every gate
(``admit``: the frequency cap counts them).  A module adds a gate with a
class and one line (see doc/design.rst, Gates).
"""
from collections import namedtuple

Settle = namedtuple('Settle', ['how', 'error', 'flags'])
Settle.__doc__ = """How a gate settles an entry instead of letting it go:
how is LEAVE (its record leaves the scenario: its waiting entries are
cancelled with error and its emails still in the outbox dropped) or SKIP
(the entry is done without its action, with error and the Boolean columns
of flags set, and its record goes on to the children)"""
LEAVE = 'leave'
SKIP = 'skip'


class Verdict:
    """What a gate answers for the entries it was shown (by entry id):

    - ``held``: why (the reason written on the entry, or None to write
      nothing) and until when (None: until the gate lets it go);
    - ``settled``: a Settle;
    - ``stopped``: entries left as they are, because their activity or
      scenario is at fault; ``faults`` gives the error of each of these
      (``{(model name, id): (message, exception or None)}``)."""
    __slots__ = ('held', 'settled', 'stopped', 'faults')

    def __init__(self):
        self.held = {}
        self.settled = {}
        self.stopped = set()
        self.faults = {}

    def hold(self, entry_id, reason=None, until=None):
        self.held[entry_id] = (reason, until)

    def settle(self, entry_id, how, error, flags=()):
        self.settled[entry_id] = Settle(how, error, tuple(flags))

    def stop(self, entry_ids, model, record_id, message, exception=None):
        self.stopped.update(entry_ids)
        self.faults[(model, record_id)] = (message, exception)

    def answered(self):
        "The ids of the entries that do not go"
        return set(self.held) | set(self.settled) | self.stopped


class Gate:
    """A gate between due and done; subclasses answer in judge

    name is also the reason written on the entries it holds until a time,
    label what the client shows for it (None when it writes none)."""
    name = None
    label = None

    def __init__(self, batch):
        self.batch = batch

    @classmethod
    def periodic(cls, RecordActivity, now):
        "The gate's work before the process cron queues the due entries"

    def applies(self):
        """Whether the gate may answer anything for the batch: a cheap test
        that spares the reads of judge"""
        return True

    def judge(self, entries):
        "The Verdict on the Entries (those the gates before let through)"
        return Verdict()

    def admit(self, entries):
        "Note the entries that passed every gate and go now"


class DueBatch:
    """The due entries of one transaction, as the gates see them: due is
    {activity id: [Entry, …]}, now the time of the run; what several gates
    read is read once and kept here"""

    def __init__(self, RecordActivity, due, now):
        self.RecordActivity = RecordActivity
        self.due = due
        self.now = now
        self.activity_of = {e.id: a for a, es in due.items() for e in es}
        self._shared = {}

    def shared(self, key, compute):
        "The value of compute() for key, computed once for the batch"
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def entries(self):
        return [e for es in self.due.values() for e in es]
