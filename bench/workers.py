#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure how trytond-worker processes share the sending of a campaign.

    bench/.venv-ours/bin/python bench/workers.py --n 20000 --workers 1,2

For each number of workers: a fresh PostgreSQL database with the module,
N parties with an email address and a running scenario whose root activity
sends an email; the scenario is triggered and processed with
[queue] worker = True, so the work waits in ir.queue; then that many
`trytond-worker` processes are started and timed until the SMTP sink (the
shared harness's, in its own process) has received N messages and no task
is left.  Every record activity must be done exactly once and the sink
must have received exactly N messages: one per recipient.
"""
import argparse
import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgbench import PG_URI, load_harness


def write_config(directory, smtp_port):
    path = Path(directory, 'trytond.conf')
    path.write_text('\n'.join([
                '[database]', 'uri = %s' % PG_URI, '',
                '[web]', 'hostname = localhost:8000', '',
                '[marketing]', 'automation_base = http://localhost:8000',
                'email_from = Bench <bench@example.com>', '',
                '[email]', 'uri = smtp://127.0.0.1:%d' % smtp_port, '',
                '[queue]', 'worker = True', '']))
    return path


def prepare(harness, name, n):
    "Create the database, the parties and the queued work"
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    harness.create_database(name)
    harness.activate_modules(name, ['marketing_automation'])
    for start in range(0, n, 1000):
        with Transaction().start(name, 0) as transaction:
            Party = Pool().get('party.party')
            Party.create([{
                        'name': 'Party %06d' % i,
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': 'party%06d@example.com' % i,
                                        }])],
                        } for i in range(start, min(start + 1000, n))])
            transaction.commit()
    with Transaction().start(name, 0) as transaction:
        pool = Pool()
        Scenario = pool.get('marketing.automation.scenario')
        Activity = pool.get('marketing.automation.activity')
        scenario = Scenario(name='Workers', model='party.party', domain='[]')
        scenario.save()
        Activity(name='Hello', parent=scenario, action='send_email',
            email_title=harness.EMAIL_TITLE,
            email_template=harness.EMAIL_TEMPLATE).save()
        Scenario.run([scenario])
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        Scenario = Pool().get('marketing.automation.scenario')
        Scenario.trigger()
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        RecordActivity = Pool().get('marketing.automation.record.activity')
        RecordActivity.process()
        transaction.commit()


def waiting_tasks(name):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(name, 0, readonly=True):
        Queue = Pool().get('ir.queue')
        return Queue.search([('finished_at', '=', None)], count=True)


def done_once(name, n):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(name, 0, readonly=True):
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Email = pool.get('ir.email')
        return (
            RecordActivity.search([('state', '=', 'done')], count=True),
            RecordActivity.search([('email_sent', '=', True)], count=True),
            Email.search([], count=True))


def run(harness, sink, n, workers):
    name = 'bench_workers_' + secrets.token_hex(4)
    prepare(harness, name, n)
    base = sink.count(settle=0)
    worker = Path(sys.executable).with_name('trytond-worker')
    processes = []
    started = time.monotonic()
    try:
        for _ in range(workers):
            processes.append(subprocess.Popen(
                    [str(worker), '-c', os.environ['TRYTOND_CONFIG'],
                        '-d', name, '-n', '1'],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True))
        while sink.count(settle=0) - base < n or waiting_tasks(name):
            if time.monotonic() - started > 3600:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
    finally:
        # a worker runs its tasks in child processes: stop the whole group
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    received = sink.count() - base
    done, sent, logged = done_once(name, n)
    for attempt in range(10):
        try:
            harness.drop_database(name, 'postgresql')
            break
        except Exception:
            time.sleep(1)
    return {
        'workers': workers, 'n': n, 'seconds': round(seconds, 2),
        'emails_per_second': round(received / seconds, 1),
        'received': received, 'done': done, 'sent': sent, 'logged': logged,
        'exactly_once': received == done == sent == logged == n,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=20000)
    parser.add_argument('--workers', default='1,2')
    args = parser.parse_args()
    harness = load_harness()
    sink = harness.SMTPSink('fast').start()
    config = tempfile.mkdtemp(prefix='bench_workers_')
    # trytond reads its configuration when it is first imported
    os.environ['TRYTOND_CONFIG'] = str(write_config(config, sink.port))
    import trytond
    print('# measured: marketing_automation (this repository) on trytond '
        '%s, PostgreSQL, %d emails, workers %s, %s'
        % (trytond.__version__, args.n, args.workers,
            dt.datetime.now().isoformat(timespec='seconds')), flush=True)
    results = []
    try:
        for workers in map(int, args.workers.split(',')):
            result = run(harness, sink, args.n, workers)
            results.append(result)
            print(result, flush=True)
    finally:
        sink.stop()
        shutil.rmtree(config, ignore_errors=True)
    if len(results) > 1:
        print('speed-up of %d workers over %d: %.2f×' % (
                results[-1]['workers'], results[0]['workers'],
                results[0]['seconds'] / results[-1]['seconds']))


if __name__ == '__main__':
    main()
