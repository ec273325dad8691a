#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure the revenue reporting of a year by month.

    .venv/bin/python bench/revenue.py --n 100000 --sales 50000

A fresh PostgreSQL database with the module and ``sale``, a company in US
dollars and a running scenario on parties with two emails: an offer and,
ten days later, a reminder to those who did not open it.  N parties entered
it over the last twelve months, one record each; a sixth of the offers and
a third of the reminders sent were clicked.  The sales of the clicked
parties, confirmed within five days of the click (a fiftieth cancelled
since), are attributed to that click.  Everything is written with SQL, but a
few sales confirmed through the ORM first: their attributions, written by
``Attribution.attribute``, must be those that the SQL of the others gives.

It times the scenario and activity reportings of the twelve months by month
(``search_read`` with the context of the reporting) and the revenue fields
of the scenario (``Scenario.read``), and counts their SQL statements with
the shared harness's counter, before and after an ``ANALYZE`` (the
PostgreSQL of these machines runs without autovacuum).
"""
import argparse
import datetime as dt
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from pgbench import (
    RUNS, analyze, database_exists, drop_database, load_harness, write_config)

# the sales confirmed through the ORM: with a recent click, and with one
# older than the attribution window
ORM_RECENT, ORM_OLD = 3, 1
SCENARIO_FIELDS = [
    'scenario', 'date', 'record_count', 'email_sent', 'sale_count',
    'revenue', 'revenue_per_email']
ACTIVITY_FIELDS = [
    'activity', 'date', 'record_count', 'email_sent', 'email_clicked',
    'sale_count', 'revenue', 'revenue_per_email']
REVENUE_FIELDS = ['sale_count', 'revenue', 'revenue_per_email']
# the columns of an attribution that the SQL must give as the module does:
# not its creation nor its confirmation, which is the time it is written
ATTRIBUTION_COLUMNS = [
    'sale', 'scenario', 'activity', 'record', 'record_activity', 'clicked',
    'company', 'currency', 'amount']


def email(name, **values):
    return {
        'name': name,
        'action': 'send_email',
        'email_title': name,
        'email_template': '<p>%s: hello ${record.name}</p>' % name,
        **values,
        }


def year_by_month(company_id):
    "The context of the reporting of the twelve months by month"
    today = dt.date.today()
    return {
        'period': 'month',
        'from_date': today.replace(day=1) - relativedelta(months=11),
        'to_date': today,
        'company': company_id,
        }


def prepare(harness, name, n, sales):
    """The database, the company, the scenario, its records and the sales;
    return the ids of the company and the scenario"""
    from trytond.modules.company.tests import create_company, set_company
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    harness.create_database(name)
    harness.activate_modules(name, ['marketing_automation', 'sale'])
    with Transaction().start(name, 0) as transaction:
        Scenario = Pool().get('marketing.automation.scenario')
        company = create_company()
        reminder = email(
            'Reminder', event='email_opened', negative=True,
            delay=dt.timedelta(days=10))
        offer = email('Offer', children=[('create', [reminder])])
        with set_company(company):
            scenario, = Scenario.create([{
                        'name': 'Revenue',
                        'model': 'party.party',
                        'domain': '[]',
                        'activities': [('create', [offer])],
                        }])
            Scenario.run([scenario])
        offer, = scenario.activities
        reminder, = offer.children
        company_id, scenario_id = company.id, scenario.id
        offer_id, reminder_id = offer.id, reminder.id
        transaction.commit()
    now = dt.datetime.now().replace(microsecond=0)
    start = dt.datetime.combine(
        year_by_month(company_id)['from_date'], dt.time())
    with Transaction().start(name, 0) as transaction:
        write_records(
            transaction.connection.cursor(), n, scenario_id, offer_id,
            reminder_id, start, now)
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        with set_company(Pool().get('company.company')(company_id)):
            orm_sales = confirm_sales(now)
        transaction.commit()
    with Transaction().start(name, 0) as transaction:
        cursor = transaction.connection.cursor()
        write_sales(
            cursor, sales - len(orm_sales), company_id, max(orm_sales), now)
        check_attributions(cursor, orm_sales)
        transaction.commit()
    return company_id, scenario_id


def write_records(cursor, n, scenario_id, offer_id, reminder_id, start, now):
    """The parties, their address and their record, entered between start
    and three hours ago, and the entries of the two emails"""
    cursor.execute(
        'INSERT INTO "party_party" '
        '("id", "active", "code", "name", "create_uid", "create_date") '
        "SELECT NEXTVAL('party_party_id_seq'), TRUE, 'R' || g, "
        "'Party ' || LPAD(g::TEXT, 6, '0'), 0, %s "
        'FROM GENERATE_SERIES(0, %s - 1) AS g', (start, n))
    cursor.execute(
        'INSERT INTO "party_address" '
        '("id", "active", "party", "sequence", "delivery", "invoice", '
        '"create_uid", "create_date") '
        "SELECT NEXTVAL('party_address_id_seq'), TRUE, \"id\", 10, TRUE, "
        'TRUE, 0, %s FROM "party_party" WHERE "code" LIKE %s',
        (start, 'R%'))
    cursor.execute(
        'INSERT INTO "marketing_automation_record" '
        '("id", "create_uid", "create_date", "scenario", "record", '
        '"blocked", "uuid") '
        "SELECT NEXTVAL('marketing_automation_record_id_seq'), 0, "
        '%s + (%s - %s) * p.g / %s, %s, \'party.party,\' || p."id", FALSE, '
        "REPLACE(GEN_RANDOM_UUID()::TEXT, '-', '') "
        'FROM (SELECT "id", ROW_NUMBER() OVER (ORDER BY "id") - 1 AS g '
        'FROM "party_party" WHERE "code" LIKE %s) AS p',
        (start, now - dt.timedelta(hours=3), start, n, scenario_id, 'R%'))
    # the offer, sent an hour after the entry, opened by two thirds, a
    # sixth clicked two hours after it was sent
    cursor.execute(
        'INSERT INTO "marketing_automation_record_activity" '
        '("id", "create_uid", "create_date", "record", "activity", "state", '
        '"at", "email_sent", "email_opened", "email_clicked", '
        '"email_last_clicked", "email_machine", "email_proxy_opened", '
        '"email_capped") '
        "SELECT NEXTVAL('marketing_automation_record_activity_id_seq'), 0, "
        'r."create_date", r."id", %s, \'done\', '
        "r.\"create_date\" + INTERVAL '1 hour', TRUE, r.\"id\" %% 3 <> 0, "
        'r."id" %% 6 = 1, '
        "CASE WHEN r.\"id\" %% 6 = 1 THEN r.\"create_date\" "
        "+ INTERVAL '3 hours' END, FALSE, FALSE, FALSE "
        'FROM "marketing_automation_record" AS r WHERE r."scenario" = %s',
        (offer_id, scenario_id))
    # the reminder, ten days after the offer: cancelled when the offer was
    # opened (an hour after it was sent), else done, a third clicked two
    # hours after it was sent, or waiting
    cursor.execute(
        'INSERT INTO "marketing_automation_record_activity" '
        '("id", "create_uid", "create_date", "write_uid", "write_date", '
        '"record", "activity", "state", "at", "email_sent", '
        '"email_opened", "email_clicked", "email_last_clicked", '
        '"email_machine", "email_proxy_opened", "email_capped") '
        "SELECT NEXTVAL('marketing_automation_record_activity_id_seq'), 0, "
        'o."at", 0, CASE WHEN o.opened THEN o."at" + INTERVAL \'1 hour\' '
        'WHEN o.done THEN o.due END, o."record", %s, '
        "CASE WHEN o.opened THEN 'cancelled' WHEN o.done THEN 'done' "
        "ELSE 'waiting' END, o.due, o.done, o.clicked, o.clicked, "
        "CASE WHEN o.clicked THEN o.due + INTERVAL '2 hours' END, "
        'FALSE, FALSE, FALSE '
        'FROM (SELECT "record", "at", "email_opened" AS opened, '
        "\"at\" + INTERVAL '10 days' AS due, done, "
        'done AND "record" %% 9 = 0 AS clicked '
        'FROM "marketing_automation_record_activity", '
        "LATERAL (SELECT NOT \"email_opened\" AND \"at\" "
        "+ INTERVAL '10 days 2 hours' <= %s AS done) AS d "
        'WHERE "activity" = %s) AS o',
        (reminder_id, now, offer_id))


def confirm_sales(now):
    """Confirm a sale of the parties of the last clicks and of one older
    than the attribution window, through the ORM; return their ids"""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    pool = Pool()
    Company = pool.get('company.company')
    Party = pool.get('party.party')
    Sale = pool.get('sale.sale')
    cursor = Transaction().connection.cursor()
    parties = []
    # the attribution window is seven days
    for operator, days, limit in [('>', 6, ORM_RECENT), ('<', 8, ORM_OLD)]:
        cursor.execute(
            'SELECT SPLIT_PART(r."record", \',\', 2)::INTEGER '
            'FROM "marketing_automation_record_activity" AS ra '
            'JOIN "marketing_automation_record" AS r '
            'ON r."id" = ra."record" '
            'WHERE ra."email_last_clicked" ' + operator + ' %s '
            'ORDER BY ra."email_last_clicked" DESC LIMIT %s',
            (now - dt.timedelta(days=days), limit))
        parties += Party.browse([p for p, in cursor])
    company = Company(Transaction().context['company'])
    sales = Sale.create([{
                'company': company.id,
                'currency': company.currency.id,
                'party': p.id,
                'invoice_address': p.addresses[0].id,
                'invoice_method': 'manual',
                'shipment_method': 'manual',
                'lines': [('create', [{
                                'description': 'Chair',
                                'quantity': 1,
                                'unit_price': Decimal('120.00'),
                                }])],
                } for p in parties])
    Sale.quote(sales)
    Sale.confirm(sales)
    return [s.id for s in sales]


def attribution_select(where):
    """The SQL of the attribution rows of the sales of where, as
    ``Attribution.attribute`` writes them when they are confirmed: the last
    click of the scenario before their confirmation, within its window

    A sale is confirmed when it is last written, and its amount is its
    untaxed amount: the company has the currency of the sales."""
    return (
        'SELECT DISTINCT ON (s."id", r."scenario") 0, s."write_date", '
        's."id", r."scenario", ra."activity", r."id", ra."id", '
        'ra."email_last_clicked", s."write_date", s."company", c."currency", '
        's."untaxed_amount_cache" '
        'FROM "sale_sale" AS s '
        'JOIN "company_company" AS c ON c."id" = s."company" '
        'JOIN "marketing_automation_record" AS r '
        'ON r."record" = \'party.party,\' || s."party" '
        'JOIN "marketing_automation_scenario" AS sc ON sc."id" = r."scenario" '
        'JOIN "marketing_automation_record_activity" AS ra '
        'ON ra."record" = r."id" '
        'WHERE ra."email_sent" AND ra."email_last_clicked" <= s."write_date" '
        'AND ra."email_last_clicked" '
        '>= s."write_date" - sc."attribution_window" AND ' + where
        + ' ORDER BY s."id", r."scenario", ra."email_last_clicked" DESC, '
        'ra."id" DESC')


def write_sales(cursor, count, company_id, after, now):
    """The sales of the parties of the clicks older than five days, each
    confirmed up to five days after its click, one in fifty cancelled
    since, with their line and their attribution"""
    cursor.execute(
        'CREATE TEMPORARY TABLE "bench_click" AS '
        'SELECT SPLIT_PART(r."record", \',\', 2)::INTEGER AS party, '
        'ra."email_last_clicked" AS clicked, '
        'ROW_NUMBER() OVER (ORDER BY ra."id") - 1 AS k '
        'FROM "marketing_automation_record_activity" AS ra '
        'JOIN "marketing_automation_record" AS r ON r."id" = ra."record" '
        'WHERE ra."email_last_clicked" <= %s',
        (now - dt.timedelta(days=5, hours=1),))
    cursor.execute(
        'INSERT INTO "sale_sale" '
        '("id", "create_uid", "create_date", "write_uid", "write_date", '
        '"company", "currency", "party", "invoice_address", '
        '"shipment_address", "warehouse", "invoice_method", '
        '"shipment_method", "invoice_state", "shipment_state", "state", '
        '"number", "quotation_date", "sale_date", "untaxed_amount_cache", '
        '"tax_amount_cache", "total_amount_cache") '
        "SELECT NEXTVAL('sale_sale_id_seq'), 0, s.confirmed, 0, "
        's.confirmed, c."id", c."currency", s.party, a."id", a."id", '
        '(SELECT MIN("id") FROM "stock_location" '
        "WHERE \"type\" = 'warehouse'), 'manual', 'manual', 'none', 'none', "
        "CASE WHEN s.g %% 50 = 0 THEN 'cancelled' "
        "ELSE (ARRAY['confirmed', 'processing', 'done'])[s.g %% 3 + 1] END, "
        "'S' || s.g, s.confirmed::DATE, s.confirmed::DATE, "
        's.amount, 0, s.amount '
        'FROM (SELECT g, bc.party, '
        "bc.clicked + (g %% 120 + 1) * INTERVAL '1 hour' AS confirmed, "
        '(10 + g %% 50 * 7.5)::NUMERIC(16, 2) AS amount '
        'FROM GENERATE_SERIES(0, %s - 1) AS g JOIN "bench_click" AS bc '
        'ON bc.k = g %% (SELECT COUNT(*) FROM "bench_click")) AS s '
        'JOIN "company_company" AS c ON c."id" = %s '
        'JOIN "party_address" AS a ON a."party" = s.party',
        (count, company_id))
    cursor.execute(
        'INSERT INTO "sale_line" '
        '("id", "create_uid", "create_date", "sale", "sequence", "type", '
        '"description", "quantity", "unit_price") '
        "SELECT NEXTVAL('sale_line_id_seq'), 0, \"create_date\", \"id\", "
        "NULL, 'line', 'Chair', 1, \"untaxed_amount_cache\" "
        'FROM "sale_sale" WHERE "id" > %s', (after,))
    cursor.execute(
        'INSERT INTO "marketing_automation_attribution" '
        '("id", "create_uid", "create_date", "sale", "scenario", '
        '"activity", "record", "record_activity", "clicked", "confirmed", '
        '"company", "currency", "amount") '
        "SELECT NEXTVAL('marketing_automation_attribution_id_seq'), a.* "
        'FROM (' + attribution_select('s."id" > %s') + ') AS a', (after,))


def check_attributions(cursor, sale_ids):
    """Check that the SQL gives the attributions that the module wrote for
    the sales of sale_ids"""
    columns = ', '.join('"%s"' % c for c in ATTRIBUTION_COLUMNS)
    cursor.execute(
        'SELECT ' + columns + ' FROM "marketing_automation_attribution" '
        'WHERE "sale" = ANY(%s) ORDER BY "sale"', (sale_ids,))
    written = cursor.fetchall()
    cursor.execute(
        'SELECT ' + columns + ' FROM ('
        + attribution_select('s."id" = ANY(%s)') + ') AS a('
        '"create_uid", "create_date", "sale", "scenario", "activity", '
        '"record", "record_activity", "clicked", "confirmed", "company", '
        '"currency", "amount") ORDER BY "sale"', (sale_ids,))
    computed = cursor.fetchall()
    if written != computed or len(written) != ORM_RECENT:
        raise AssertionError(
            'the SQL attributions differ from the module\'s:\n%s\n%s'
            % (written, computed))
    print('# %d sales confirmed through the ORM: %d attributed, as the '
        'SQL attributes them' % (len(sale_ids), len(written)), flush=True)


def existing_ids(name):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    Pool(name).init()
    with Transaction().start(name, 0, readonly=True):
        Scenario = Pool().get('marketing.automation.scenario')
        Company = Pool().get('company.company')
        scenario, = Scenario.search([('name', '=', 'Revenue')])
        company, = Company.search([])
        return company.id, scenario.id


def counts(name):
    from trytond.modules.marketing_automation import \
        marketing_automation_revenue as revenue
    from trytond.transaction import Transaction
    with Transaction().start(name, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        result = []
        for table in ['marketing_automation_record',
                'marketing_automation_record_activity', 'sale_sale',
                'marketing_automation_attribution']:
            cursor.execute('SELECT COUNT(*) FROM "%s"' % table)
            result.append('%s %d' % (table, cursor.fetchone()[0]))
        cursor.execute(
            'SELECT COUNT(*), SUM(a."amount") '
            'FROM "marketing_automation_attribution" AS a '
            'JOIN "sale_sale" AS s ON s."id" = a."sale" '
            'WHERE s."state" = ANY(%s)', (revenue.COUNTED_STATES,))
        result.append('counted %d sales, %s' % cursor.fetchone())
        return ', '.join(result)


def limited(transaction, timeout):
    "Cancel the statements of transaction that last more than timeout s"
    transaction.connection.cursor().execute(
        "SELECT SET_CONFIG('statement_timeout', %s, TRUE)",
        ('%ss' % timeout,))


def explain_slowest(name, context, function, timeout):
    """Print the slowest statement of function and its plan, executed, or
    only planned when the statement was cancelled after timeout s"""
    from psycopg import ClientCursor

    from trytond import backend
    from trytond.transaction import Transaction
    statements = []
    try:
        with Transaction().start(
                name, 0, readonly=True, context=context) as transaction:
            limited(transaction, timeout)
            cursor_class = type(transaction.connection.cursor())
            execute = cursor_class.execute

            def timed_execute(cursor, query, params=None):
                started = time.perf_counter()
                try:
                    return execute(cursor, query, params)
                finally:
                    statements.append(
                        (time.perf_counter() - started, query, params))
            cursor_class.execute = timed_execute
            try:
                function()
            finally:
                cursor_class.execute = execute
        explain = 'EXPLAIN (ANALYZE, BUFFERS) '
    except backend.DatabaseOperationalError:
        explain = 'EXPLAIN '
    seconds, query, params = max(statements, key=lambda s: s[0])
    with Transaction().start(name, 0, readonly=True) as transaction:
        cursor = ClientCursor(transaction.connection)
        statement = cursor.mogrify(query, params)
        print('  %s: its slowest statement (%.1f ms) and its plan' % (
                function.__doc__, seconds * 1000))
        print(textwrap.indent(statement, '    '))
        cursor.execute(explain + statement)
        for line, in cursor:
            print('    ' + line)
    sys.stdout.flush()


def measure(name, company_id, scenario_id, counter, label, explain_over,
        timeout):
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    context = year_by_month(company_id)

    def timed(function):
        "Run function RUNS times or until it takes more than timeout s"
        times, statements, value = [], [], None
        for _ in range(RUNS):
            started = time.perf_counter()
            try:
                with Transaction().start(
                        name, 0, readonly=True, context=context
                        ) as transaction:
                    limited(transaction, timeout)
                    counter.reset()
                    counter.active = True
                    started = time.perf_counter()
                    value = function()
                    times.append(time.perf_counter() - started)
                    statements.append(counter.total)
            except backend.DatabaseOperationalError:
                times.append(time.perf_counter() - started)
                statements.append(counter.total)
                value = None
                break
            finally:
                counter.active = False
        return {
            'ms': statistics.median(times) * 1000,
            'min_ms': min(times) * 1000,
            'max_ms': max(times) * 1000,
            'runs': len(times),
            'statements': statements,
            'value': value,
            }

    def reporting(model, fields_names):
        def read():
            Reporting = Pool().get(model)
            return Reporting.search_read([], fields_names=fields_names)
        read.__doc__ = model
        return read

    def scenario():
        "marketing.automation.scenario revenue fields"
        Scenario = Pool().get('marketing.automation.scenario')
        return Scenario.read([scenario_id], REVENUE_FIELDS)

    operations = {
        'reporting scenario': reporting(
            'marketing.automation.reporting.scenario', SCENARIO_FIELDS),
        'reporting activity': reporting(
            'marketing.automation.reporting.activity', ACTIVITY_FIELDS),
        'scenario revenue': scenario,
        }
    results = {k: timed(f) for k, f in operations.items()}

    print(label)
    print('  %-20s %9s %9s %9s %10s  %s' % (
            'operation', 'median', 'min', 'max', 'statements', 'result'))
    for key, result in results.items():
        value = result['value']
        if value is None:
            outcome = 'cancelled after %s s (statement_timeout)' % timeout
        else:
            outcome = '%d rows, %d sales, %s' % (len(value),
                sum(r['sale_count'] for r in value),
                sum(r['revenue'] for r in value))
        first, last = result['statements'][0], result['statements'][-1]
        statements = '%d' % last
        if first != last:
            # the first run fills the caches of the pool
            statements += ' (1st %d)' % first
        print('  %-20s %6.1f ms %6.1f ms %6.1f ms %10s  %s' % (
                key, result['ms'], result['min_ms'], result['max_ms'],
                statements, outcome), flush=True)
    for key, result in results.items():
        if result['ms'] > explain_over:
            explain_slowest(name, context, operations[key], timeout)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=100000)
    parser.add_argument('--sales', type=int, default=50000)
    parser.add_argument(
        '--keep-db', metavar='NAME',
        help="keep the database under this name, or measure it again")
    parser.add_argument(
        '--explain-over', type=float, default=100, metavar='MS',
        help="print the plan of the slowest statement of the operations "
        "slower than this (default: %(default)s ms)")
    parser.add_argument(
        '--timeout', type=int, default=60, metavar='S',
        help="cancel a statement after this (default: %(default)s s): "
        "without statistics, PostgreSQL may choose a plan that takes hours")
    args = parser.parse_args()
    harness = load_harness()
    config = tempfile.mkdtemp(prefix='bench_revenue_')
    os.environ['TRYTOND_CONFIG'] = str(write_config(config))
    import trytond
    from trytond.transaction import Transaction
    name = args.keep_db or 'bench_revenue_' + secrets.token_hex(4)
    print('# measured: marketing_automation (this repository) with sale on '
        'trytond %s, PostgreSQL, %d records, %d sales, %s'
        % (trytond.__version__, args.n, args.sales,
            dt.datetime.now().isoformat(timespec='seconds')), flush=True)
    try:
        started = time.monotonic()
        if args.keep_db and database_exists(name):
            company_id, scenario_id = existing_ids(name)
        else:
            company_id, scenario_id = prepare(
                harness, name, args.n, args.sales)
        print('# prepared in %.0f s: %s' % (
                time.monotonic() - started, counts(name)), flush=True)
        counter = harness.SQLCounter()
        with Transaction().start(name, 0, readonly=True) as transaction:
            counter.install([type(transaction.connection.cursor())])
        measure(name, company_id, scenario_id, counter,
            'without statistics (no ANALYZE since the data was written)',
            args.explain_over, args.timeout)
        analyze(name)
        measure(name, company_id, scenario_id, counter, 'after ANALYZE',
            args.explain_over, args.timeout)
        counter.uninstall()
    finally:
        if not args.keep_db:
            drop_database(harness, name)
        shutil.rmtree(config, ignore_errors=True)


if __name__ == '__main__':
    main()
