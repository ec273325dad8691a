#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure the audience figures of a scenario: who it will really reach.

    .venv/bin/python bench/audience.py --n 100000

A fresh PostgreSQL database with the module and N parties: 90 % with an
email address, 5 % whose only address is archived, 5 % without any; a
running unsubscribable scenario on every party (domain ``[]``) that has
entered them all, 1 % of its records blocked and 2 % of the parties
unsubscribed from it.  It times the four counts of the scenario
(``Scenario.audience_counts``, what the form reads) and the first page of
each list they open (a search on ``marketing_audience``), and counts their
SQL statements with the shared harness's counter, before and after an
``ANALYZE`` (the PostgreSQL of these machines runs without autovacuum).
"""
import argparse
import datetime as dt
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time

from pgbench import (
    RUNS, analyze, database_exists, drop_database, load_harness, write_config)


def prepare(harness, name, n):
    """The database, the parties and the scenario; return its id

    The parties and their addresses are written with SQL: the ORM takes
    half an hour for 100,000 of them on a loaded machine."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    harness.create_database(name)
    harness.activate_modules(name, ['marketing_automation'])
    with Transaction().start(name, 0) as transaction:
        cursor = transaction.connection.cursor()
        cursor.execute(
            'INSERT INTO "party_party" '
            '("id", "active", "code", "name", "create_uid", "create_date") '
            "SELECT NEXTVAL('party_party_id_seq'), TRUE, 'B' || g, "
            "'Party ' || LPAD(g::TEXT, 6, '0'), 0, NOW() "
            'FROM GENERATE_SERIES(0, %s - 1) AS g', (n,))
        # 5 % without an address, 5 % with an archived one
        cursor.execute(
            'INSERT INTO "party_contact_mechanism" '
            '("id", "active", "party", "type", "value", "value_compact", '
            '"create_uid", "create_date") '
            "SELECT NEXTVAL('party_contact_mechanism_id_seq'), "
            "p.g % 20 <> 1, p.id, 'email', "
            "'party' || p.g || '@example.com', "
            "'party' || p.g || '@example.com', 0, NOW() "
            'FROM (SELECT "id", ROW_NUMBER() OVER (ORDER BY "id") - 1 AS g '
            'FROM "party_party") AS p WHERE p.g % 20 <> 0')
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        Scenario = Pool().get('marketing.automation.scenario')
        scenario = Scenario(
            name='Audience', model='party.party', domain='[]',
            unsubscribable=True)
        scenario.save()
        Scenario.run([scenario])
        transaction.commit()
        scenario_id = scenario.id
    with Transaction().start(name, 0) as transaction:
        Pool().get('marketing.automation.scenario').trigger()
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        cursor = transaction.connection.cursor()
        cursor.execute(
            'UPDATE "marketing_automation_record" SET "blocked" = TRUE '
            'WHERE "id" %% 100 = 0 AND "scenario" = %s', (scenario_id,))
        cursor.execute(
            'INSERT INTO '
            '"party_party-unsubscribed-marketing_automation_scenario" '
            '("id", "create_uid", "create_date", "party", "scenario") '
            "SELECT NEXTVAL('\"party_party-unsubscribed-marketing_"
            "automation_scenario_id_seq\"'), 0, NOW(), \"id\", %s "
            'FROM "party_party" WHERE "id" %% 50 = 1', (scenario_id,))
        transaction.commit()
    return scenario_id


def existing_scenario(name):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    Pool(name).init()
    with Transaction().start(name, 0, readonly=True):
        Scenario = Pool().get('marketing.automation.scenario')
        scenario, = Scenario.search([('name', '=', 'Audience')])
        return scenario.id


def measure(harness, name, scenario_id, counter, label):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    results = {}

    def timed(key, function):
        times, statements = [], []
        for _ in range(RUNS):
            with Transaction().start(name, 0, readonly=True):
                counter.reset()
                counter.active = True
                started = time.perf_counter()
                value = function()
                times.append(time.perf_counter() - started)
                counter.active = False
                statements.append(counter.total)
        results[key] = {
            'ms': round(statistics.median(times) * 1000, 1),
            'first_ms': round(times[0] * 1000, 1),
            'statements': max(statements),
            'value': value,
            }

    def counts():
        Scenario = Pool().get('marketing.automation.scenario')
        return Scenario(scenario_id).audience_counts()
    timed('counts', counts)

    for kind in ['reachable', 'no_email', 'unsubscribed']:
        def page(kind=kind):
            Party = Pool().get('party.party')
            with Transaction().set_context(marketing_scenario=scenario_id):
                return len(Party.search(
                        [('marketing_audience', '=', kind)], limit=1000))
        timed('list %s' % kind, page)
    print(label, file=sys.stderr)
    for key, result in results.items():
        print('  %-20s %8.1f ms (first %.1f ms), %d statements: %s' % (
                key, result['ms'], result['first_ms'],
                result['statements'], result['value']))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=100000)
    parser.add_argument(
        '--keep-db', metavar='NAME',
        help="keep the database under this name, or measure it again")
    args = parser.parse_args()
    harness = load_harness()
    config = tempfile.mkdtemp(prefix='bench_audience_')
    os.environ['TRYTOND_CONFIG'] = str(write_config(config))
    import trytond
    from trytond.transaction import Transaction
    name = args.keep_db or 'bench_audience_' + secrets.token_hex(4)
    print('# measured: marketing_automation (this repository) on trytond '
        '%s, PostgreSQL, %d parties, %s'
        % (trytond.__version__, args.n,
            dt.datetime.now().isoformat(timespec='seconds')), flush=True)
    try:
        started = time.monotonic()
        if args.keep_db and database_exists(name):
            scenario_id = existing_scenario(name)
        else:
            scenario_id = prepare(harness, name, args.n)
        print('# prepared in %.0f s' % (time.monotonic() - started),
            flush=True)
        counter = harness.SQLCounter()
        with Transaction().start(name, 0, readonly=True) as transaction:
            counter.install([type(transaction.connection.cursor())])
        print('without statistics (no ANALYZE since the data was written)')
        measure(harness, name, scenario_id, counter, 'no analyze')
        analyze(name)
        print('after ANALYZE')
        measure(harness, name, scenario_id, counter, 'analyze')
        counter.uninstall()
    finally:
        if not args.keep_db:
            drop_database(harness, name)
        shutil.rmtree(config, ignore_errors=True)


if __name__ == '__main__':
    main()
