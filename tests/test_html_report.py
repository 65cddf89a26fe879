"""evaluate.py --html: one self-contained page, checked in a real browser."""

import re

import numpy as np
import pytest

from triplet_reid import evaluate
from triplet_reid.evaluation import html_report
from conftest import browse, write_market_like


@pytest.fixture
def evaluation(tmp_path):
    """A Market-like query and gallery with images, CSVs and embeddings;
    the arguments of evaluate.py for them."""
    write_market_like(tmp_path)
    return ['--excluder', 'market1501', '--metric', 'euclidean',
            '--query_dataset', str(tmp_path / 'q.csv'), '--gallery_dataset',
            str(tmp_path / 'g.csv'), '--query_embeddings', str(tmp_path / 'q.h5'),
            '--gallery_embeddings', str(tmp_path / 'g.h5'), '--image_root', str(tmp_path)]


def test_the_report_loads_in_a_browser_with_every_query_and_image(evaluation, tmp_path):
    assert evaluate.main(evaluation + ['--html', str(tmp_path / 'report'),
                                       '--html_queries', '2']) == 0
    page = tmp_path / 'report' / 'index.html'
    text = page.read_text()
    shown, log = browse(page, tmp_path)
    # Worst, best and random: two each; each with ten results; CMC and ROC.
    assert shown['title'] == 'Evaluation'
    assert shown['queries'] == 6
    assert shown['images'] == 6 * (1 + 10) + 2
    assert shown['broken'] == 0 and shown['external'] == 0 and shown['scripts'] == 0
    assert 'Uncaught' not in log and 'Not allowed to load' not in log
    # The figures, and junk (the query person seen by the query's camera) marked.
    for figure in ('mAP', 'top-1', 'mINP', 'EER', 'at FPR 0.001'):
        assert '<th>{}</th>'.format(figure) in text
    assert 'class="result junk"' in text and 'class="result correct"' in text
    assert shown['thresholds'] <= 6


def test_the_threshold_line_lies_between_the_results_within_and_beyond():
    results = [('data:,', 'correct', d, 'x') for d in (0.1, 0.5, 0.9, 1.3)]
    row = html_report.ranking('data:,', 'q', results, 0.7)
    captions = re.findall(r'<div>(\d): |class="(threshold)"', row)
    assert [c[0] or c[1] for c in captions] == ['1', '2', 'threshold', '3', '4']
    assert 'threshold' not in html_report.ranking('data:,', 'q', results, None)
    assert 'class="threshold"' not in html_report.ranking('data:,', 'q', results, 5.0)


def test_worst_best_and_random_queries_are_apart():
    valid = np.array([True, False] + [True] * 10)
    aps = np.linspace(0.1, 1.0, 11)
    chosen = dict(html_report.chosen_queries(aps, valid, 3))
    assert chosen['Worst queries by average precision'] == [0, 2, 3]
    assert chosen['Best queries by average precision'] == [11, 10, 9]
    drawn = chosen['Random queries']
    assert len(drawn) == 3 and not set(drawn) & {0, 1, 2, 3, 9, 10, 11}


def test_a_report_needs_images_and_a_folder(evaluation, tmp_path, capsys):
    no_root = evaluation[:evaluation.index('--image_root')]
    with pytest.raises(SystemExit):
        evaluate.main(no_root + ['--html', str(tmp_path / 'r')])
    assert '--html draws the images, so it needs --image_root' in capsys.readouterr().err
    (tmp_path / 'afile').write_text('')
    with pytest.raises(evaluate.cli.UserError, match='--html .* is a file'):
        evaluate.main(evaluation + ['--html', str(tmp_path / 'afile')])
    (tmp_path / 'r2' / 'index.html').mkdir(parents=True)
    with pytest.raises(evaluate.cli.UserError, match='is a folder'):
        evaluate.main(evaluation + ['--html', str(tmp_path / 'r2')])
