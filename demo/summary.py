#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A live summary of the marketing scenarios of a SQLite database.

    python demo/summary.py DATABASE_FILE MAILS_FOLDER [--every SECONDS]
        [--once]

It reads the database read-only every few seconds and shows, for each
scenario, its records and how many are blocked (unsubscribed), and for each
activity the entries waiting (for their time or their event; those of
blocked records never run and are left out), done and cancelled, the emails
sent, opened and clicked by people, those a machine (the scanner of a mail
server) reached and those a privacy proxy fetched, and the errors, told by
kind under the table: the
parties without an email address (the demo has one, which is expected) and
the others by their text.  On a terminal the summary is redrawn in place;
otherwise it is printed again only when a number changes."""
import argparse
import collections
import datetime
import os
import sqlite3
import sys
import time

COLUMNS = [
    ('waiting', "waiting", 8), ('done', "done", 6), ('sent', "sent", 6),
    ('opened', "opened", 8), ('clicked', "clicked", 8),
    ('machine', "machine", 9), ('proxy', "proxy", 7),
    ('cancelled', "cancelled", 10), ('errors', "errors", 8),
    ]
NAME_WIDTH = 23
EVENTS = {
    ('email_opened', 0): "on open",
    ('email_opened', 1): "if not opened",
    ('email_clicked', 0): "on click",
    ('email_clicked', 1): "if not clicked",
    }


def connect(path):
    uri = 'file:%s?mode=ro' % path
    connection = sqlite3.connect(uri, uri=True, timeout=10)
    return connection


def utcnow():
    # trytond stores naive datetimes in UTC
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def parse_datetime(value):
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


def duration(delta):
    seconds = max(int(delta.total_seconds()), 0)
    if seconds >= 3600:
        return '%dh %02dm' % (seconds // 3600, seconds % 3600 // 60)
    if seconds >= 60:
        return '%dm %02ds' % (seconds // 60, seconds % 60)
    return '%ds' % seconds


def read(connection):
    "The numbers of the summary, as plain data"
    cursor = connection.cursor()
    now = utcnow()
    scenarios = []
    cursor.execute(
        'SELECT id, name, state FROM marketing_automation_scenario '
        'ORDER BY id')
    for scenario_id, name, state in cursor.fetchall():
        cursor.execute(
            'SELECT COUNT(*), COALESCE(SUM(CASE WHEN blocked THEN 1 '
            'ELSE 0 END), 0) FROM marketing_automation_record '
            'WHERE scenario = ?', (scenario_id,))
        records, blocked = cursor.fetchone()
        scenarios.append({
                'id': scenario_id, 'name': name, 'state': state,
                'records': records, 'blocked': blocked,
                'activities': activities(
                    cursor, 'marketing.automation.scenario,%s' % scenario_id,
                    now),
                'errors': errors(cursor, scenario_id),
                })
    cursor.execute(
        "SELECT COUNT(*) FROM marketing_automation_email "
        "WHERE state = 'pending'")
    pending, = cursor.fetchone()
    cursor.execute(
        "SELECT MAX(l.ended) FROM ir_cron_log AS l "
        "JOIN ir_cron AS c ON c.id = l.cron "
        "WHERE c.method LIKE 'marketing.automation.%'")
    last_cron, = cursor.fetchone()
    return {
        'scenarios': scenarios, 'pending': pending,
        'last_cron': parse_datetime(last_cron), 'now': now,
        }


def activities(cursor, parent, now, depth=0):
    cursor.execute(
        'SELECT id, name, event, negative, delay '
        'FROM marketing_automation_activity WHERE parent = ? ORDER BY id',
        (parent,))
    result = []
    for activity_id, name, event, negative, delay in cursor.fetchall():
        # The entries of blocked records stay waiting but never run: they
        # are not counted as waiting.
        waiting = "a.state = 'waiting' AND NOT r.blocked"
        cursor.execute(
            "SELECT "
            f"COALESCE(SUM(CASE WHEN {waiting} THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.state = 'done' THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.email_sent THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.email_opened THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.email_clicked THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.email_machine THEN 1 ELSE 0 END), 0),"
            "COALESCE(SUM(CASE WHEN a.email_proxy_opened THEN 1 ELSE 0 END),"
            " 0),"
            "COALESCE(SUM(CASE WHEN a.state = 'cancelled' THEN 1 ELSE 0 END),"
            " 0),"
            "COALESCE(SUM(CASE WHEN a.error IS NOT NULL AND a.error != '' "
            "THEN 1 ELSE 0 END), 0), "
            f"MIN(CASE WHEN {waiting} THEN a.at END) "
            "FROM marketing_automation_record_activity AS a "
            "JOIN marketing_automation_record AS r ON r.id = a.record "
            "WHERE a.activity = ?",
            (activity_id,))
        *counts, next_at = cursor.fetchone()
        when = []
        if event:
            when.append(EVENTS.get((event, int(bool(negative))), event))
        if delay:
            when.append('after %s' % duration(
                    datetime.timedelta(seconds=float(delay))))
        next_at = parse_datetime(next_at)
        result.append({
                'name': name, 'depth': depth, 'when': ' '.join(when),
                'counts': dict(zip([c for c, _, _ in COLUMNS], counts)),
                'next': next_at - now if next_at else None,
                })
        result.extend(activities(
                cursor, 'marketing.automation.activity,%s' % activity_id,
                now, depth + 1))
    return result


def errors(cursor, scenario_id):
    """The errors of the entries of the scenario by kind: the names of the
    parties without an email address, and the count of each other error"""
    cursor.execute(
        "SELECT a.error, r.record "
        "FROM marketing_automation_record_activity AS a "
        "JOIN marketing_automation_record AS r ON r.id = a.record "
        "WHERE r.scenario = ? AND a.error IS NOT NULL AND a.error != '' "
        "ORDER BY a.id", (scenario_id,))
    no_address, others = [], collections.Counter()
    for error, record in cursor.fetchall():
        party = party_of(cursor, record)
        if party and not has_email(cursor, party[0]):
            no_address.append(party[1])
        else:
            others[error.strip().splitlines()[0]] += 1
    return {'no_address': no_address, 'others': others}


def party_of(cursor, record):
    "The id and name of the party of a record of a scenario, or None"
    model, _, id_ = (record or '').partition(',')
    if model == 'sale.sale':
        try:
            cursor.execute('SELECT party FROM sale_sale WHERE id = ?', (id_,))
        except sqlite3.OperationalError:
            return None
        row = cursor.fetchone()
        model, id_ = 'party.party', row[0] if row else None
    if model != 'party.party' or id_ is None:
        return None
    cursor.execute('SELECT id, name FROM party_party WHERE id = ?', (id_,))
    return cursor.fetchone()


def has_email(cursor, party_id):
    cursor.execute(
        "SELECT 1 FROM party_contact_mechanism WHERE party = ? "
        "AND type = 'email' AND active AND COALESCE(value, '') != '' "
        "LIMIT 1", (party_id,))
    return cursor.fetchone() is not None


def mails(folder):
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith('.eml'))
    except FileNotFoundError:
        return []


def render(data, folder):
    "The lines of the summary and the key that tells when it changed"
    lines, key = [], []
    local = datetime.datetime.now().strftime('%H:%M:%S')
    for scenario in data['scenarios']:
        lines.append('Scenario "%s" (%s)  at %s' % (
                scenario['name'], scenario['state'], local))
        lines.append('  records: %s   unsubscribed (blocked): %s' % (
                scenario['records'], scenario['blocked']))
        lines.append('  %-*s' % (NAME_WIDTH, 'activity') + ''.join(
                '%*s' % (width, title) for _, title, width in COLUMNS))
        key.append((scenario['records'], scenario['blocked']))
        for activity in scenario['activities']:
            name = '  ' * activity['depth'] + activity['name']
            counts = activity['counts']
            lines.append('  %-*s' % (NAME_WIDTH, name[:NAME_WIDTH]) + ''.join(
                    '%*s' % (width, counts[c]) for c, _, width in COLUMNS))
            notes = []
            if activity['when']:
                notes.append(activity['when'])
            if activity['next'] is not None:
                if activity['next'].total_seconds() > 0:
                    notes.append('next due in %s' % duration(activity['next']))
                else:
                    notes.append('due now, sent at the next cron run')
            if notes:
                lines.append('  %s  (%s)' % (
                        '  ' * activity['depth'], ', '.join(notes)))
            key.append(tuple(counts.values()))
        lines.extend(error_lines(scenario['errors']))
        key.append((tuple(scenario['errors']['no_address']),
                tuple(sorted(scenario['errors']['others'].items()))))
    saved = mails(folder)
    key.append((data['pending'], len(saved)))
    status = 'mails saved: %s' % len(saved)
    if data['pending']:
        status += ', %s waiting for delivery' % data['pending']
    if data['last_cron']:
        status += ', crons last ran %s ago' % duration(
            data['now'] - data['last_cron'])
    else:
        status += ', crons not run yet'
    lines.append('  ' + status)
    for name in saved[-3:]:
        lines.append('    ' + name)
    return lines, key


def error_lines(errors):
    "The errors of a scenario by kind, for the lines under its table"
    lines = []
    names = errors['no_address']
    if names:
        lines.append('  errors: %s expected, the %s without an email address '
            '(%s)' % (len(names),
                'party' if len(set(names)) == 1 else 'parties',
                ', '.join(sorted(set(names)))))
    for text, count in sorted(errors['others'].items()):
        if len(text) > 100:
            text = text[:99] + '…'
        lines.append('  errors: %s to look at: %s' % (count, text))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('database')
    parser.add_argument('mails')
    parser.add_argument('--every', type=float, default=3)
    parser.add_argument('--once', action='store_true')
    args = parser.parse_args(argv)

    tty = sys.stdout.isatty()
    shown, last_key = 0, None
    try:
        while True:
            try:
                connection = connect(args.database)
                try:
                    data = read(connection)
                finally:
                    connection.close()
            except sqlite3.OperationalError as exception:
                # busy while trytond writes: try again at the next tick
                if args.once:
                    raise
                if not tty:
                    print('(database busy: %s)' % exception, file=sys.stderr)
                time.sleep(args.every)
                continue
            lines, key = render(data, args.mails)
            if tty:
                if shown:
                    sys.stdout.write('\033[%dF\033[J' % shown)
                sys.stdout.write('\n'.join(lines) + '\n')
                shown = len(lines)
            elif key != last_key:
                sys.stdout.write('\n'.join(lines) + '\n\n')
            sys.stdout.flush()
            last_key = key
            if args.once:
                break
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    sys.exit(main())
