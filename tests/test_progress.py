"""Progress bars: drawn with rate and ETA on a terminal, silent in logs and
under --quiet; the long-running functions report their work to the end."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from triplet_reid.serving import gallery
from triplet_reid.evaluation import metrics, rerank
from conftest import ROOT, touch, write_cuhk03
from triplet_reid.data import convert

# Two seconds of work in 20 steps, through progress.bar.
WORK = ('import sys, time\n'
        'sys.path.insert(0, {!r}); import checkout; checkout.register()\n'
        'from triplet_reid.cli import progress\n'
        'with progress.bar("Embedding", "image", quiet=sys.argv[1] == "quiet") as report:\n'
        '    for i in range(20):\n'
        '        time.sleep(0.1)\n'
        '        report(i + 1, 20)\n'
        'print("done")\n').format(ROOT)


def run_in_terminal(argv):
    """The output of `argv` run with stdin, stdout and stderr on a
    pseudo-terminal of 100 columns."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))
        os.execv(argv[0], argv)
    output = b''
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return output.decode('utf-8', 'replace')


def test_a_bar_with_rate_and_eta_on_a_terminal():
    shown = run_in_terminal([sys.executable, '-c', WORK, 'loud'])
    assert 'Embedding:' in shown and '20/20' in shown and 'image/s' in shown
    # tqdm's [elapsed<remaining, rate]: an ETA was shown on the way.
    assert '<00:0' in shown
    assert shown.rstrip().endswith('done')


def test_no_bar_under_quiet_or_without_a_terminal():
    assert 'Embedding' not in run_in_terminal([sys.executable, '-c', WORK, 'quiet'])
    piped = subprocess.run([sys.executable, '-c', WORK, 'loud'], capture_output=True,
                           text=True, timeout=60)
    assert piped.stdout == 'done\n' and piped.stderr == ''


def reports():
    calls = []
    return calls, lambda done, total: calls.append((done, total))


def assert_counted_to_the_end(calls, total):
    assert calls and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(t == total for _, t in calls)


def test_evaluation_reports_its_queries():
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.arange(10) % 5, np.arange(30) % 5
    q_fids = np.array(['q{}'.format(i) for i in range(10)])
    q, g = rng.normal(size=(10, 4)), rng.normal(size=(30, 4))
    calls, report = reports()
    metrics.evaluate(q_pids, q_fids, g_pids, metrics.metric_distances(q, g, 'euclidean'),
                     lambda idx: np.zeros((len(idx), 30), bool), batch_size=3, progress=report)
    assert_counted_to_the_end(calls, 10)
    assert len(calls) == 4


def test_reranking_and_the_index_report_their_images():
    rng = np.random.default_rng(0)
    embs = rng.normal(size=(50, 8)).astype(np.float32)
    calls, report = reports()
    rerank.nearest_neighbours(embs, 5, 'euclidean', block=16, progress=report)
    assert_counted_to_the_end(calls, 50)
    assert len(calls) == 4
    calls, report = reports()
    rerank.reranker(embs[:10], embs[10:], progress=report)
    assert_counted_to_the_end(calls, 50)
    calls, report = reports()
    index = gallery.build_index(embs, 'cosine', report, chunk=20)
    assert_counted_to_the_end(calls, 50)
    assert index.ntotal == 50


def test_conversion_reports_folders_and_extraction(tmp_path):
    touch(tmp_path / 'crops', ['p{}/img_{}.jpg'.format(i, j) for i in range(6) for j in range(2)])
    calls, report = reports()
    convert.folders(str(tmp_path / 'crops'), progress=report)
    assert_counted_to_the_end(calls, 6)
    root = tmp_path / 'cuhk03'
    write_cuhk03(root, np.random.default_rng(0))
    calls, report = reports()
    convert.cuhk03(str(root), ('detected',), progress=report)
    # Two campuses of three persons each.
    assert_counted_to_the_end(calls, 6)


@pytest.mark.parametrize('script', ['evaluate.py', 'search.py', 'data/convert.py'])
def test_quiet_is_a_flag(script):
    argv = [script] + {'data/convert.py': ['folders', '--help'],
                       'search.py': ['search', '--help']}.get(script, ['--help'])
    shown = subprocess.run([sys.executable] + argv, cwd=ROOT, capture_output=True, text=True,
                           timeout=60).stdout
    assert '--quiet' in shown
