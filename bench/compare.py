#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure this module against Tryton's own marketing_automation.

    python3 bench/compare.py --db postgresql --n 10000 --queue worker

For each module it runs the shared harness (bench_ma.py, found beside the
repository in ../shared/bench or at $BENCH_MA) with the same options, each
in its own virtual environment, one right after the other, and prints the
figures of both and their ratios.  The first line says what was measured.

The environments are made on first use under bench/.venv-*:
- "ours": this repository installed in editable mode;
- "upstream": trytond-marketing-automation from PyPI.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERIES = '8.0.*'
COMMON = [
    'trytond==' + SERIES, 'trytond-party==' + SERIES,
    'psycopg[binary,pool]>=3', 'aiosmtpd', 'html2text',
    ]
MODULES = {
    'upstream': ['trytond-marketing-automation==' + SERIES],
    'ours': ['-e', str(ROOT)],
    }
# The phases whose time per unit is compared, and their unit
PHASES = {
    'a_trigger': 'records',
    'b_process': 'emails_received',
    'c_click': 'requests',
    'd_process': 'emails_received',
    'e_unsubscribe': 'requests',
    'f_process_delayed': 'emails_received',
    }
# The units each phase is expected to handle, with the harness's defaults
# (a tenth of the recipients click, a hundredth unsubscribe): they give the
# time per unit of a phase whose run was given up
EXPECTED_UNITS = {
    'a_trigger': lambda n: n,
    'b_process': lambda n: n,
    'c_click': lambda n: n // 10,
    'd_process': lambda n: n // 10,
    'e_unsubscribe': lambda n: n // 100,
    'f_process_delayed': lambda n: n - n // 10,
    }
PHASE_STARTED = re.compile(r'^\[bench_ma\] phase (\w+) \.\.\.$')
PHASE_ENDED = re.compile(
    r'^\[bench_ma\] phase (\w+): ([0-9.]+) s, ([0-9]+) statements')


def harness():
    path = os.environ.get('BENCH_MA') or ROOT.parent / 'shared' / 'bench' / (
        'bench_ma.py')
    path = Path(path)
    if not path.exists():
        sys.exit("bench_ma.py not found: set BENCH_MA to its path")
    return path


def environment(name):
    "The python of the virtual environment of name, made if missing"
    venv = HERE / ('.venv-' + name)
    python = venv / 'bin' / 'python'
    if not python.exists():
        subprocess.run(
            [sys.executable, '-m', 'venv', str(venv)], check=True)
        subprocess.run(
            [str(python), '-m', 'pip', 'install', '--quiet', '--upgrade',
                'pip'], check=True)
        subprocess.run(
            [str(python), '-m', 'pip', 'install', '--quiet']
            + COMMON + MODULES[name], check=True)
    return python


def versions(python):
    "The distribution and version of the module and of trytond"
    code = (
        'import importlib.metadata as m, json\n'
        'names = {"trytond": m.version("trytond")}\n'
        'for d in m.distributions():\n'
        '    if "trytond.modules" in (d.read_text("entry_points.txt") or "")'
        ' and "marketing_automation" in (d.read_text("entry_points.txt")'
        ' or ""):\n'
        '        names[d.metadata["Name"]] = d.version\n'
        'print(json.dumps(names))\n')
    # away from the repository, whose metadata would be found first
    output = subprocess.run(
        [str(python), '-c', code], check=True, capture_output=True,
        text=True, cwd='/').stdout
    return json.loads(output)


def result_path(out, name, args):
    return out / ('%s-%s-%s-n%d.json' % (name, args.db, args.queue, args.n))


def measure(name, python, args, out):
    """The result of the harness for the module of name.

    A run given up after --timeout gives the phases it finished, from the
    harness's progress lines, and the time the running one had taken so
    far: a lower bound of its time, marked "at_least"."""
    path = result_path(out, name, args)
    if path.exists():
        path.unlink()
    command = [str(python), str(harness()), '--db', args.db,
        '--n', str(args.n), '--queue', args.queue, '--label', name,
        '--json', str(path)]
    if not args.delayed:
        command.append('--no-delayed')
    if args.queue_batch_size:
        command += ['--queue-batch-size', str(args.queue_batch_size)]
    print('# running %s: %s' % (name, ' '.join(command[1:])),
        file=sys.stderr, flush=True)
    started = time.monotonic()
    phases, running = {}, {}
    env = dict(os.environ)
    if name == 'ours' and not args.classify_events:
        # The harness clicks from a library (Werkzeug) seconds after the
        # delivery, as a link scanner does: classified, its clicks would
        # make no child due and fail its checks.
        env['TRYTOND_MARKETING__EVENT_CLASSIFICATION'] = 'False'
        # and it counts the links of an email: the hidden trap link of the
        # scanners would be one too many
        env['TRYTOND_MARKETING__EVENT_TRAP'] = 'False'
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=env)

    def follow():
        for line in process.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            line = line.rstrip('\n')
            match = PHASE_STARTED.match(line)
            if match:
                running.clear()
                running[match.group(1)] = time.monotonic()
            match = PHASE_ENDED.match(line)
            if match:
                running.clear()
                phases[match.group(1)] = {
                    'seconds': float(match.group(2)),
                    'statements': int(match.group(3)),
                    }

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        # the harness exits 1 when a check fails: the figures are kept
        process.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        stopped = time.monotonic()
        # an interrupted harness drops its database and stops its sink
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        result = {'partial': True, 'timeout': args.timeout, 'phases': {},
            'checks': {}, 'env': {}}
        for phase, figures in phases.items():
            figures[PHASES[phase]] = EXPECTED_UNITS[phase](args.n)
            result['phases'][phase] = figures
        for phase, since in running.items():
            result['phases'][phase] = {
                'seconds': round(stopped - since, 2), 'statements': 0,
                'at_least': True,
                PHASES[phase]: EXPECTED_UNITS[phase](args.n),
                }
        with path.open('w') as file:
            file.write(json.dumps(result) + '\n')
        print('# %s did not finish within %s s' % (name, args.timeout),
            flush=True)
        return result
    reader.join()
    if not path.exists():
        raise RuntimeError('%s gave no result' % name)
    print('# %s took %.0f s' % (name, time.monotonic() - started),
        file=sys.stderr, flush=True)
    with path.open() as file:
        return json.loads(file.readline())


def per_unit(result, phase):
    figures = result['phases'].get(phase)
    if not figures:
        return None, None, None
    units = figures.get(PHASES[phase]) or 0
    if not units:
        return figures['seconds'], None, None
    return (figures['seconds'], figures['seconds'] / units,
        figures['statements'] / units)


def report(results):
    names = list(results)
    head = ['phase']
    for name in names:
        head += ['%s s' % name, '%s ms/unit' % name, '%s stmts/unit' % name]
    if len(names) == 2:
        head.append('ratio %s/%s' % tuple(names))
    print('| ' + ' | '.join(head) + ' |')
    print('|---' * len(head) + '|')
    for phase in PHASES:
        cells, times, bounds = [], [], []
        for name in names:
            seconds, per, statements = per_unit(results[name], phase)
            # the time of a phase given up is only a lower bound
            bound = results[name]['phases'].get(phase, {}).get('at_least')
            mark = '> ' if bound else ''
            times.append(per)
            bounds.append(bound)
            cells += [
                '-' if seconds is None else mark + '%.2f' % seconds,
                '-' if per is None else mark + '%.2f' % (per * 1000),
                '-' if statements is None or bound
                else '%.1f' % statements]
        if len(names) == 2:
            if not (times[0] and times[1]) or bounds[1]:
                ratio = '-'
            else:
                ratio = ('> ' if bounds[0] else '') + '%.1f×' % (
                    times[0] / times[1])
            cells.append(ratio)
        print('| %s | %s |' % (phase, ' | '.join(cells)))
    for name in names:
        result = results[name]
        if result.get('partial'):
            print('%s: given up after %s s; "> " marks the time the '
                'running phase had taken by then' % (name, result['timeout']))
            continue
        failed = [c for c, v in result['checks'].items() if not v['ok']]
        peak = max(
            (p.get('peak_rss_mb') or 0) for p in result['phases'].values())
        print('%s: peak RSS %.0f MB, load %s at start, checks failed: %s'
            % (name, peak, result['env'].get('loadavg_start'),
                ', '.join(failed) or 'none'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--db', choices=['sqlite', 'postgresql'],
        default='sqlite')
    parser.add_argument('--n', type=int, default=1000)
    parser.add_argument('--queue', choices=['inline', 'worker'],
        default='worker')
    parser.add_argument('--queue-batch-size', type=int, default=0)
    parser.add_argument('--delayed', action=argparse.BooleanOptionalAction,
        default=True)
    parser.add_argument('--modules', default='upstream,ours',
        help="which modules to measure, in this order")
    parser.add_argument('--timeout', type=float, default=None,
        help="seconds after which a module's run is given up")
    parser.add_argument('--classify-events', action='store_true',
        help="run this module with its event classification (the "
        "harness's clicks then fire nothing, and its checks of c_click and "
        "d_process fail)")
    parser.add_argument('--out', default=str(HERE / 'results'))
    parser.add_argument('--report', action='store_true',
        help="print the table of the results kept in --out, measuring "
        "nothing")
    args = parser.parse_args()

    out = Path(args.out)
    if args.report:
        results = {}
        for name in args.modules.split(','):
            with result_path(out, name, args).open() as file:
                results[name] = json.loads(file.readline())
        print('# kept results: ' + '; '.join(
                '%s = given up after %s s' % (n, r['timeout'])
                if r.get('partial') else '%s = %s %s, started %s' % (
                    n, r['module']['name'], r['module']['version'],
                    r['env']['started'])
                for n, r in results.items())
            + '; db=%s n=%d queue=%s' % (args.db, args.n, args.queue))
        report(results)
        return
    out.mkdir(parents=True, exist_ok=True)
    pythons = {n: environment(n) for n in args.modules.split(',')}
    print('# measured: ' + '; '.join(
            '%s = %s' % (n, ', '.join(
                    '%s %s' % i for i in versions(p).items()))
            for n, p in pythons.items())
        + '; db=%s n=%d queue=%s' % (args.db, args.n, args.queue),
        flush=True)
    results = {}
    for name, python in pythons.items():
        try:
            results[name] = measure(name, python, args, out)
        except RuntimeError as error:
            print('# %s' % error, flush=True)
    if results:
        report(results)


if __name__ == '__main__':
    main()
