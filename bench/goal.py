#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the shared harness with a goal on its scenario.

    BENCH_MA=bench/goal.py python3 bench/compare.py --modules ours \\
        --db postgresql --n 10000 --queue inline

It takes the same options as the harness (``bench_ma.py``, beside the
repository in ../shared/bench or at $BENCH_MA_HARNESS).  The scenario of the
harness gets a goal that no party meets (parties whose name starts with a
text none has): every due entry is checked against it before it is done and
none leaves, so the figures
compare with those of the harness alone, and their difference is the cost
of the check.
"""
import os
import sys
from pathlib import Path

HARNESS = Path(
    os.environ.get('BENCH_MA_HARNESS')
    or Path(__file__).resolve().parents[2] / 'shared' / 'bench'
    / 'bench_ma.py')
sys.path.insert(0, str(HARNESS.parent))

import bench_ma  # noqa: E402

_setup_scenario = bench_ma.Bench.setup_scenario


def setup_scenario(self):
    "The harness's scenario, with a goal that no party reaches"
    ids = _setup_scenario(self)
    from trytond.pool import Pool
    from trytond.pyson import PYSONEncoder
    goal = PYSONEncoder().encode([('name', 'like', 'Nobody is called so%')])
    with self.transaction() as transaction:
        Scenario = Pool().get('marketing.automation.scenario')
        Scenario.write([Scenario(ids['scenario'])], {'goal': goal})
        transaction.commit()
    bench_ma.info('goal %s', goal)
    return ids


bench_ma.Bench.setup_scenario = setup_scenario

if __name__ == '__main__':
    sys.exit(bench_ma.main())
