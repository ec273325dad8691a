#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure how fast the feedback messages are classified.

    .venv/bin/python bench/feedback.py --n 1000

Classifies N messages of the corpus of ``tests/feedback`` (cycled, so each
kind comes in its share) with ``feedback.classify`` and the bounce address
of the corpus, then reads the record activity of each VERP token found, as
the inbox will; prints the messages per second of the best and of the
median of ``--runs`` runs, and how many messages of each kind a run gave.
No database: this is the pure part of the work of the inbox.
"""
import argparse
import collections
import glob
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, 'tests', 'feedback')
BOUNCE = 'bounce@shop.example.com'
SECRET = 'corpus secret'


def run(feedback, messages):
    "Classify messages; return the seconds it took and the kinds found"
    kinds = collections.Counter()
    start = time.perf_counter()
    for raw in messages:
        result = feedback.classify(raw, bounce_address=BOUNCE)
        for token in result.tokens:
            if feedback.read_token(SECRET, token):
                break
        kinds[result.kind] += 1
    return time.perf_counter() - start, kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--n', type=int, default=1000, help="messages per run (1000)")
    parser.add_argument('--runs', type=int, default=5, help="runs (5)")
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from trytond.modules.marketing_automation import feedback

    corpus = []
    for path in sorted(glob.glob(os.path.join(CORPUS, '*.eml'))):
        with open(path, 'rb') as fp:
            corpus.append(fp.read())
    messages = [corpus[i % len(corpus)] for i in range(args.n)]
    size = sum(map(len, messages)) / len(messages)
    print(
        f"{args.n} messages of {len(corpus)} in the corpus, "
        f"{size / 1024:.1f} KiB on average; flufl.bounce "
        + ("installed" if feedback.flufl_bounce else "missing"))

    durations = []
    for _ in range(args.runs):
        duration, kinds = run(feedback, messages)
        durations.append(duration)
    print("kinds: " + ", ".join(
            f"{kind} {count}" for kind, count in sorted(kinds.items())))
    print(
        f"best {args.n / min(durations):,.0f} messages/s, "
        f"median {args.n / statistics.median(durations):,.0f} messages/s "
        f"({statistics.median(durations) * 1000 / args.n:.2f} ms each)")


if __name__ == '__main__':
    main()
