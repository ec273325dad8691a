#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the shared harness with a send window and a frequency cap active.

    bench/.venv-ours/bin/python bench/paced.py --db sqlite --n 1000 \\
        --sql-top 20
    BENCH_MA=bench/paced.py python3 bench/compare.py --modules ours \\
        --db postgresql --n 10000 --queue worker

It takes the same options as the harness (``bench_ma.py``, beside the
repository in ../shared/bench or at $BENCH_MA_HARNESS).  The scenario of the
harness gets a send window open every day at every hour in Europe/Paris,
and the site a frequency cap of 10 emails a day and 20 a week: every due
email is checked against both and none is held back, so the figures compare
with those of the harness alone, and their difference is the cost of the
checks.
"""
import os
import sys
from pathlib import Path

HARNESS = Path(
    os.environ.get('BENCH_MA_HARNESS')
    or Path(__file__).resolve().parents[2] / 'shared' / 'bench'
    / 'bench_ma.py')
# read by trytond when the harness imports it
os.environ['TRYTOND_MARKETING__FREQUENCY_CAP'] = '10/day, 20/week'
sys.path.insert(0, str(HARNESS.parent))

import bench_ma  # noqa: E402

DAYS = [
    'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday',
    'sunday']
_setup_scenario = bench_ma.Bench.setup_scenario


def setup_scenario(self):
    "The harness's scenario, with a send window open at every hour"
    ids = _setup_scenario(self)
    from trytond.pool import Pool
    with self.transaction() as transaction:
        Scenario = Pool().get('marketing.automation.scenario')
        Scenario.write([Scenario(ids['scenario'])], {
                'send_window': True,
                'window_days': DAYS,
                'window_start': None,
                'window_end': None,
                'window_timezone': 'Europe/Paris',
                })
        transaction.commit()
    bench_ma.info(
        'send window every day at every hour, frequency cap %s',
        os.environ['TRYTOND_MARKETING__FREQUENCY_CAP'])
    return ids


bench_ma.Bench.setup_scenario = setup_scenario

if __name__ == '__main__':
    sys.exit(bench_ma.main())
