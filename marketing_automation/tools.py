# SPDX-License-Identifier: GPL-3.0-or-later
"""What the features of the module share: how the engine cuts its work
into batches, queues, locks and contains it, its clock, and the helpers
that more than one file calls

Call the clock as ``tools.now()`` (an attribute of this module), so that a
test that patches ``marketing_automation.tools.now`` moves every clock of
the module at once."""
import datetime
import logging
import time
from contextlib import contextmanager

from sql import Cast, Conflict, For, Literal
from sql.functions import Function
from sql.operators import And, Or

from trytond import backend
from trytond.config import config
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .exceptions import ActivityFault, ConditionError, DomainError

# trytond checks every id of a browsed list against the others: lists of
# instances stay short so this does not cost more than the work.
BROWSE_SIZE = 200
# How many periods the trends of the reporting show
TREND_PERIODS = 10


def now():
    """The clock of the module: the current time, without microseconds, as
    a naive datetime in the server's time (as trytond writes its dates)"""
    return datetime.datetime.now().replace(microsecond=0)


def eval_environment():
    "The names that a PYSON domain or condition of a marketer may read"
    context = Transaction().context
    return {
        'context': context,
        'current_date': datetime.date.today(),
        'time': time,
        }


def describe(exception):
    "The message of an exception as the marketer reads it"
    message = getattr(exception, 'message', None) or str(exception)
    if isinstance(exception, (ActivityFault, DomainError, ConditionError)):
        return message
    return '%s: %s' % (type(exception).__name__, message)


def round_rate(numerator, denominator):
    """numerator / denominator rounded half up to 2 decimals, 0 without a
    denominator: as the reporting computes its rates in SQL"""
    if not denominator:
        return 0.
    return (numerator * 200 + denominator) // (denominator * 2) / 100


def trend_periods(period=None):
    """The start dates of the last periods (oldest first) and the period"""
    period = period or Transaction().context.get('period') or 'month'
    today = datetime.date.today()
    if period == 'year':
        starts = [datetime.date(today.year - i, 1, 1)
            for i in range(TREND_PERIODS)]
    elif period == 'day':
        starts = [today - datetime.timedelta(days=i)
            for i in range(TREND_PERIODS)]
    else:
        period = 'month'
        starts = []
        year, month = today.year, today.month
        for _ in range(TREND_PERIODS):
            starts.append(datetime.date(year, month, 1))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return list(reversed(starts)), period


def as_date(value):
    """The date of value: a date, a datetime or its ISO text (as a context
    or a backend without dates gives it)"""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if isinstance(value, datetime.datetime):
        value = value.date()
    return value


def random_hex():
    """The SQL expression of 32 random hexadecimal digits, like the uuid a
    record gets in Python, or None where the backend has none"""
    if backend.name == 'postgresql':
        return _Replace(
            Cast(_GenRandomUuid(), 'VARCHAR'), Literal('-'), Literal(''))


class _GenRandomUuid(Function):
    __slots__ = ()
    _function = 'GEN_RANDOM_UUID'


class _Replace(Function):
    __slots__ = ()
    _function = 'REPLACE'


def batch_size():
    "How many records the engine handles in one statement"
    return config.getint('marketing', 'automation_batch_size', default=1000)


def id_batches(table, where, size=10000):
    """The ids of the rows of table that match where, a batch at a time, by
    increasing id: the work done on a batch (a purge deletes or blanks its
    rows) is never read again"""
    cursor = Transaction().connection.cursor()
    last_id = 0
    while True:
        cursor.execute(*table.select(
                table.id, where=where & (table.id > last_id),
                order_by=[table.id.asc], limit=size))
        ids = [i for i, in cursor]
        if not ids:
            return
        yield ids
        last_id = ids[-1]


def queue(method, ids):
    """Queue the method of a model for the ids in tasks that share the work
    among workers.

    A task costs a transaction and, for emails, a connection to the mail
    server: trytond's default of 20 records a task is too few for work
    this cheap per record."""
    batch = config.getint(
        'marketing', 'automation_queue_batch_size', default=BROWSE_SIZE)
    with Transaction().set_context(queue_batch=batch):
        for sub in grouped_slice(ids, BROWSE_SIZE):
            method(list(sub))


def skip_conflicts(table):
    """The ON CONFLICT clause that skips the rows a unique constraint of
    table refuses, or None where the database has none"""
    if Transaction().database.has_insert_on_conflict():
        return Conflict(table)


class _ForUpdateOf(For):
    "FOR UPDATE OF the aliases the tables have in the query"

    def __str__(self):
        return 'FOR UPDATE OF ' + ', '.join(
            '"%s"' % table.alias for table in self.tables)


def for_update(*tables):
    """The locking clause of a select that takes rows of tables for this
    transaction, or None where the database has no row locks (SQLite
    serialises writers anyway)"""
    if backend.name == 'postgresql':
        return _ForUpdateOf('UPDATE', *tables)


@contextmanager
def quick_commits(cursor):
    """Let PostgreSQL acknowledge commits before their WAL reaches the disk.

    A commit then costs a round trip instead of a disk flush.  What a killed
    process committed is kept all the same; only a crash of the database
    server itself may lose the last fraction of a second of commits."""
    if backend.name != 'postgresql':
        yield
        return
    cursor.execute('SET synchronous_commit TO OFF')
    try:
        yield
    finally:
        cursor.execute('RESET synchronous_commit')


_savepoints = 0


def savepoint(cursor, name):
    """Set the savepoint name in the transaction of cursor

    Python's sqlite3 opens a transaction only before a statement that
    writes: a savepoint set before would open its own, and releasing it
    would commit everything."""
    connection = Transaction().connection
    if getattr(connection, 'in_transaction', True) is False:
        cursor.execute('BEGIN IMMEDIATE')
    cursor.execute('SAVEPOINT %s' % name)


def contained(function, *args, **kwargs):
    """Run function in a savepoint and return None, or undo its work and
    return the exception it raised

    So the fault of one scenario or activity stays its own: the others go on
    in the same transaction.  The errors of the database that make a
    transaction start again (a concurrent worker took the same rows) are
    not contained: the whole work must be retried."""
    global _savepoints
    cursor = Transaction().connection.cursor()
    _savepoints += 1
    name = 'marketing_contained_%s' % _savepoints
    savepoint(cursor, name)
    try:
        function(*args, **kwargs)
    except backend.DatabaseOperationalError:
        raise
    except Exception as exception:
        cursor.execute('ROLLBACK TO SAVEPOINT %s' % name)
        logging.getLogger(function.__module__).debug(
            "contained %s", function, exc_info=True)
        return exception
    cursor.execute('RELEASE SAVEPOINT %s' % name)


def acting_user(user):
    """The id of the user whose rights the work written by user (a res.user,
    an id or None) runs with: root, who may do anything, lends the
    administrator's, as does a row written before authors were kept"""
    return (int(user) if user is not None else 0) or 1


@contextmanager
def acting_as(user_id, context=None):
    """Run the block as the user of user_id with their access rights and
    record rules checked, in context

    The crons run as root, who may read everything: what a marketer wrote
    (a domain, a condition, a template) must see no more than they do."""
    transaction = Transaction()
    with transaction.set_user(user_id), transaction.set_context(
            context or {}, _check_access=True):
        yield


def none_of(condition):
    """The negation of condition, an OR of conditions such as those of the
    hooks that extend each other, written as the AND of their negations

    PostgreSQL plans ``NOT EXISTS`` as an anti-join only when it is not
    inside another operator: ``NOT (FALSE OR EXISTS …)`` is run as a subplan
    for each row."""
    if isinstance(condition, Or):
        negations = [
            none_of(c) for c in condition
            if not (isinstance(c, Literal) and c.value is False)]
        if not negations:
            return Literal(True)
        if len(negations) == 1:
            return negations[0]
        return And(negations)
    return ~condition
