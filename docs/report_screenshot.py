#!/usr/bin/env python3
"""Redraw docs/demo_report.png, the picture of the HTML report of the demo's evaluation.

Run it after `make demo`, from the repository root; it writes the report with
evaluate.py --html (two queries of each kind) and photographs its top in a
headless Chromium (Debian: `apt install chromium`):

    .venv/bin/python docs/report_screenshot.py [--demo_root experiments/demo] [--output PNG]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--demo_root', default='experiments/demo',
                        help='The experiment root that `make demo` trained and embedded.')
    parser.add_argument('--output', default=os.path.join(ROOT, 'docs', 'demo_report.png'),
                        help='The PNG to write.')
    parser.add_argument('--height', type=int, default=1250, help='The picture\'s height.')
    args = parser.parse_args()
    chromium = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser',
                                                    'google-chrome'))), None)
    if chromium is None:
        sys.exit('No Chromium found; install one (Debian: apt install chromium).')
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, 'report')
        subprocess.run([
            sys.executable, os.path.join(ROOT, 'evaluate.py'), '--excluder', 'market1501',
            '--metric', 'euclidean', '--query_dataset', 'data/demo/demo_query.csv',
            '--query_embeddings', os.path.join(args.demo_root, 'demo_query_embeddings.h5'),
            '--gallery_dataset', 'data/demo/demo_test.csv',
            '--gallery_embeddings', os.path.join(args.demo_root, 'demo_test_embeddings.h5'),
            '--image_root', 'data/demo', '--html', report, '--html_queries', '2'],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                        '--disable-background-networking', '--disable-component-update',
                        '--disable-sync', '--hide-scrollbars', '--user-data-dir=' + tmp + '/p',
                        '--window-size=1100,{}'.format(args.height),
                        '--screenshot=' + os.path.abspath(args.output),
                        'file://' + os.path.join(report, 'index.html')],
                       check=True, capture_output=True)
    # A palette of 256 colours keeps the picture small in the repository.
    from PIL import Image
    with Image.open(args.output) as shot:
        small = shot.convert('RGB').quantize(256)
    small.save(args.output, optimize=True)
    print('Wrote {}.'.format(args.output))


if __name__ == '__main__':
    main()
