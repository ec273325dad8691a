# SPDX-License-Identifier: GPL-3.0-or-later
"""What the benchmarks on a PostgreSQL database of their own share:
the shared harness, a trytond configuration, and the database's life"""
import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PG_URI = os.environ.get(
    'BENCH_PG_URI', 'postgresql://postgres@127.0.0.1:5432/')
# the runs of each measure
RUNS = 5


def load_harness():
    """The module bench_ma.py, beside the repository or at $BENCH_MA,
    imported by its name, so that a process it spawns (its SMTP sink)
    imports it too"""
    path = Path(os.environ.get('BENCH_MA')
        or HERE.parent.parent / 'shared' / 'bench' / 'bench_ma.py')
    sys.path.insert(0, str(path.parent))
    return importlib.import_module(path.stem)


def write_config(directory):
    "Write in directory the trytond.conf of the benchmark and return it"
    path = Path(directory, 'trytond.conf')
    path.write_text('\n'.join([
                '[database]', 'uri = %s' % PG_URI, 'language = en', '',
                '[web]', 'hostname = localhost:8000', '',
                '[marketing]', 'automation_base = http://localhost:8000',
                '']))
    return path


def database_exists(name):
    from trytond import backend
    return name in backend.Database().list()


def analyze(name):
    "Give the planner the statistics of the tables of the database name"
    from trytond.transaction import Transaction
    with Transaction().start(name, 0, autocommit=True) as transaction:
        transaction.connection.cursor().execute('ANALYZE')


def drop_database(harness, name):
    "Drop the database name, waiting for its last connections to close"
    for attempt in range(10):
        try:
            harness.drop_database(name, 'postgresql')
            break
        except Exception:
            time.sleep(1)
