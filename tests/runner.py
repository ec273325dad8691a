# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the test suite of the marketing_automation module.

From the root of the repository::

    python -m tests.runner [--db sqlite|postgresql] [-k PATTERN]

Every test is reported on one line, the tracebacks of the failures follow,
and the last line reads ``N passed, N failed`` (with ``, N skipped`` when
some tests were skipped).
The exit status is 0 only when no test failed and at least one passed.

The database backend is chosen before trytond is imported, and the databases
built for the tests are cached in ``DB_CACHE`` under a key computed from the
module's sources and the installed Tryton packages, so they are built again
only when one of them changes.  On PostgreSQL a test class gets its
database as a copy of a template database that the run makes from the cache
the first time (see restore_by_template).
"""
import argparse
import hashlib
import os
import shutil
import sys
import time
import unittest
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, 'tests')
MODULE = os.path.join(ROOT, 'marketing_automation')
DEFAULT_PG_URI = 'postgresql://postgres@127.0.0.1:5432/'
# Enough for the trytond series tested side by side; a cache used less than
# CACHE_IN_USE seconds ago may still be read by another run.
CACHES_KEPT = 4
CACHE_IN_USE = 2 * 60 * 60


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m tests.runner',
        description="Run the tests of the marketing_automation module.")
    parser.add_argument(
        '--db', choices=['sqlite', 'postgresql'], default='sqlite',
        help="database backend (default: %(default)s); "
        "the PostgreSQL URI is taken from MA_PG_URI "
        f"(default: {DEFAULT_PG_URI})")
    parser.add_argument(
        '-k', dest='patterns', action='append', metavar='PATTERN',
        help="only run the tests (and scenarios) whose name matches "
        "PATTERN; a pattern without '*' matches anywhere in the name; "
        "may be repeated")
    parser.add_argument(
        '-f', '--failfast', action='store_true',
        help="stop at the first failure")
    return parser.parse_args(argv)


def database_uri(db):
    if db == 'sqlite':
        return 'sqlite://'
    uri = os.environ.get('MA_PG_URI')
    if not uri:
        uri = os.environ.get('TRYTOND_DATABASE_URI', '')
        if not uri.startswith('postgresql:'):
            uri = DEFAULT_PG_URI
    return uri


def sources_digest():
    "Return a digest of the module's files and the installed Tryton packages"
    digest = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(MODULE):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        for filename in sorted(filenames):
            if filename.endswith(('.pyc', '.pyo')):
                continue
            path = os.path.join(directory, filename)
            digest.update(os.path.relpath(path, MODULE).encode('utf-8'))
            digest.update(b'\0')
            with open(path, 'rb') as fp:
                digest.update(fp.read())
            digest.update(b'\0')
    tryton = sorted(
        (dist.metadata['Name'].lower().replace('-', '_'), dist.version)
        for dist in metadata.distributions()
        if (dist.metadata['Name'] or '').lower().startswith(
            ('trytond', 'proteus')))
    for name, version in tryton:
        digest.update(f'{name}=={version}\n'.encode('utf-8'))
    return digest.hexdigest()


def database_cache():
    cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    caches = os.path.join(cache_home, 'marketing_automation', 'db')
    cache = os.path.join(caches, sources_digest())
    os.makedirs(cache, exist_ok=True)
    # The modification time tells which caches were used last.
    os.utime(cache)
    remove_old_caches(caches)
    return cache


def remove_old_caches(caches):
    "Keep only the caches used last, every change of the sources makes one"
    def last_use(path):
        try:
            return os.path.getmtime(path)
        except OSError:
            # removed meanwhile by another run
            return 0

    paths = sorted(
        (os.path.join(caches, name) for name in os.listdir(caches)),
        key=last_use, reverse=True)
    now = time.time()
    for path in paths[CACHES_KEPT:]:
        if now - last_use(path) > CACHE_IN_USE:
            shutil.rmtree(path, ignore_errors=True)


def setup_environment(args):
    "Configure trytond through the environment; it reads it at import"
    os.environ['TRYTOND_DATABASE_URI'] = database_uri(args.db)
    if args.db == 'sqlite':
        os.environ.setdefault('DB_NAME', ':memory:')
    else:
        os.environ.setdefault(
            'DB_NAME', f'test_ma_{os.getpid()}_{int(time.time())}')
    if 'DB_CACHE' not in os.environ:
        os.environ['DB_CACHE'] = database_cache()


class ProgressResult(unittest.TestResult):
    "Print one line per test with its outcome and duration"

    def __init__(self, stream):
        super().__init__(stream=stream, descriptions=False, verbosity=1)
        self.stream = stream
        self.passed = self.failed = self.skips = 0
        self._current = None
        self._start = None
        self._outcome = None
        # (kind, test, traceback) in the order the problems happened
        self.problems = []

    def _write(self, test, outcome, duration, detail=''):
        if detail:
            detail = f' {detail}'
        self.stream.write(
            f'{test.id()} ... {outcome}{detail} [{duration:.2f}s]\n')
        self.stream.flush()

    def _set_outcome(self, test, outcome, detail=''):
        if test is self._current:
            # The first failure of a test (or of one of its subtests) is
            # the one that decides its outcome.
            if self._outcome is None or self._outcome[0] == 'ok':
                self._outcome = (outcome, detail)
        else:
            # Failures of class or module fixtures are reported outside of
            # any test.
            self._write(test, outcome, 0)
            self._count(outcome)

    def _count(self, outcome):
        if outcome in {'ok', 'expected failure'}:
            self.passed += 1
        elif outcome == 'skip':
            self.skips += 1
        else:
            self.failed += 1

    def startTest(self, test):
        super().startTest(test)
        self._current = test
        self._outcome = None
        self._start = time.perf_counter()

    def stopTest(self, test):
        super().stopTest(test)
        duration = time.perf_counter() - self._start
        outcome, detail = self._outcome or ('ok', '')
        self._write(test, outcome, duration, detail)
        self._count(outcome)
        self._current = None

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set_outcome(test, 'ok')

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.problems.append(('FAIL', test, self.failures[-1][1]))
        self._set_outcome(test, 'FAIL')

    def addError(self, test, err):
        super().addError(test, err)
        self.problems.append(('ERROR', test, self.errors[-1][1]))
        self._set_outcome(test, 'ERROR')

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set_outcome(test, 'skip', f'({reason})')

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set_outcome(test, 'expected failure')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set_outcome(test, 'unexpected success')

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            if issubclass(err[0], test.failureException):
                outcome, traceback = 'FAIL', self.failures[-1][1]
            else:
                outcome, traceback = 'ERROR', self.errors[-1][1]
            self.problems.append((outcome, subtest, traceback))
            self._set_outcome(test, outcome, subtest._subDescription())

    def print_failures(self):
        for kind, test, traceback in self.problems:
            self.stream.write('=' * 70 + '\n')
            self.stream.write(f'{kind}: {test.id()}\n')
            self.stream.write('-' * 70 + '\n')
            self.stream.write(traceback + '\n')
        for test in self.unexpectedSuccesses:
            self.stream.write('=' * 70 + '\n')
            self.stream.write(f'UNEXPECTED SUCCESS: {test.id()}\n')
        self.stream.flush()

    def summary(self):
        line = f'{self.passed} passed, {self.failed} failed'
        if self.skips:
            line += f', {self.skips} skipped'
        return line


def load_tests(patterns):
    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = [
            p if '*' in p else f'*{p}*' for p in patterns]
    return without_base_cases(
        loader.discover(TESTS, pattern='test_*.py', top_level_dir=ROOT))


def without_base_cases(suite):
    "Drop the base test cases that test modules import from trytond"
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(without_base_cases(test))
        elif type(test).__module__ != 'trytond.tests.test_tryton':
            kept.addTest(test)
    return kept


# The template databases of this run, by the cache file they copy
_templates = {}


def restore_by_template(test_tryton):
    """Have trytond restore the cached database of a test class on
    PostgreSQL by copying a template database (CREATE DATABASE ...
    TEMPLATE), not with pg_restore

    pg_restore takes seconds for each test class and scenario, a copy half
    a second.  The first restore of a cache file is done with pg_restore,
    and its database copied into a template named after the database of
    this run: no other run (another checkout on the same server, other
    sources) can read it, and it is dropped at the end of the run."""
    from trytond.transaction import Transaction

    restore = test_tryton._pg_restore

    def copy(source, target):
        with Transaction().start(
                None, 0, close=True, autocommit=True) as transaction:
            if test_tryton.db_exist(target):
                transaction.database.drop(transaction.connection, target)
            transaction.database.create(
                transaction.connection, target, source)

    def restore_copy(cache_file):
        template = _templates.get(cache_file)
        if template is None:
            if not restore(cache_file):
                return False
            template = f'{test_tryton.DB_NAME}_template_{len(_templates)}'
            copy(test_tryton.DB_NAME, template)
            _templates[cache_file] = template
        else:
            copy(template, test_tryton.DB_NAME)
        return True
    test_tryton._pg_restore = restore_copy


def drop_templates():
    "Drop the template databases of this run"
    from trytond.transaction import Transaction
    for template in _templates.values():
        try:
            with Transaction().start(
                    None, 0, close=True, autocommit=True) as transaction:
                transaction.database.drop(transaction.connection, template)
        except Exception as exception:
            sys.stderr.write(f'Could not drop {template}: {exception}\n')
    _templates.clear()


def drop_test_database():
    "Drop the PostgreSQL test database if a test left it behind"
    test_tryton = sys.modules.get('trytond.tests.test_tryton')
    if test_tryton is None:
        return
    from trytond import backend
    if backend.name != 'postgresql':
        return
    try:
        test_tryton.drop_db()
    except Exception as exception:
        sys.stderr.write(
            f'Could not drop {test_tryton.DB_NAME}: {exception}\n')


def main(argv=None):
    args = parse_args(argv)
    setup_environment(args)
    stream = sys.stdout
    stream.write(
        f"Testing on {os.environ['TRYTOND_DATABASE_URI']} "
        f"(database cache: {os.environ['DB_CACHE']})\n")
    stream.flush()

    suite = load_tests(args.patterns)
    if args.db == 'postgresql':
        from trytond.tests import test_tryton
        restore_by_template(test_tryton)
    result = ProgressResult(stream)
    result.failfast = args.failfast
    start = time.perf_counter()
    result.startTestRun()
    try:
        suite.run(result)
    finally:
        result.stopTestRun()
        drop_test_database()
        if _templates:
            drop_templates()
    duration = time.perf_counter() - start

    result.print_failures()
    stream.write(f'Ran {result.testsRun} tests in {duration:.1f}s\n')
    stream.write(result.summary() + '\n')
    stream.flush()
    return 0 if result.failed == 0 and result.passed > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
