# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether a site module overrides a method of the Python API.

The engine works on sets of entries; Tryton's own module calls its methods
once per record (``Activity.execute``, ``Record.eval``,
``RecordActivity.set_delay``...).  A site module written for it overrides
those methods and calls ``super()``: the engine keeps its set-based path
while nobody overrides the method, and calls the method for each record as
soon as a module does.  The answer is computed once per class of the pool.
"""
import contextvars
import weakref
from dataclasses import dataclass, field

_OWN = __name__.rpartition('.')[0] + '.'
_TESTS = _OWN + 'tests.'
_cache = weakref.WeakKeyDictionary()


def _own(module):
    "Whether the module is one of this module's files (not its tests)"
    return module.startswith(_OWN) and not module.startswith(_TESTS)


def overridden(cls, name):
    """Whether a class of another module than this one defines name for
    the class of the pool cls (an instance works too)

    Only the first definition met along the method resolution order
    matters: a site module's class comes before this module's ones."""
    if not isinstance(cls, type):
        cls = cls.__class__
    answers = _cache.setdefault(cls, {})
    if name not in answers:
        answers[name] = False
        for klass in cls.__mro__:
            if name in vars(klass):
                answers[name] = not _own(klass.__module__)
                break
    return answers[name]


@dataclass
class Run:
    """What the entries of an activity done one at a time (through
    ``Activity.execute``) report to the engine besides their exceptions:
    the errors that kept their action from being done and those whose
    action finishes later (an email in the outbox), and the work to queue
    once for all of them"""
    errors: dict = field(default_factory=dict)
    later: set = field(default_factory=set)
    queued: dict = field(default_factory=dict)

    def queue(self, key, method, ids):
        """Queue method for ids at the end of the run, once for all the
        ids given under the same key"""
        self.queued.setdefault(key, (method, []))[1].extend(ids)


_RUN = contextvars.ContextVar('marketing_automation_run', default=None)


def current_run():
    "The Run of the entries being done one at a time, or a throwaway one"
    return _RUN.get() or Run()


def running(run):
    "Make run the current Run; returns the token to reset it with"
    return _RUN.set(run)


def stop_running(token):
    _RUN.reset(token)
