#!/usr/bin/env python3
"""Benchmark: how long each script's `--help` takes, from process start to exit.

The scripts parse their arguments before TensorFlow is imported, so `--help`
costs Python's start, NumPy, pandas and argparse. For comparison the last row
is `import tensorflow` alone.

    .venv/bin/python -m bench.help [--repeats 5] [--json FILE]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('train.py', 'embed.py', 'evaluate.py', 'search.py', 'export.py', 'import_model.py',
           'data/convert.py', 'data/make_demo.py')


def seconds(command, repeats):
    """The wall-clock seconds of `repeats` runs of `command`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='Runs of each command.')
    parser.add_argument('--json', help='Also write the table to this JSON file.')
    args = parser.parse_args()

    rows = []
    commands = [(s + ' --help', [sys.executable, s, '--help']) for s in SCRIPTS]
    commands.append(('import tensorflow', [sys.executable, '-c', 'import tensorflow']))
    for name, command in commands:
        times = seconds(command, args.repeats)
        rows.append({'command': name, 'median_s': round(statistics.median(times), 3),
                     'max_s': round(max(times), 3)})
    print('{:28s} {:>9s} {:>7s}'.format('command', 'median s', 'max s'))
    for row in rows:
        print('{command:28s} {median_s:9.3f} {max_s:7.3f}'.format(**row))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'repeats': args.repeats, 'rows': rows}, f,
                      indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
