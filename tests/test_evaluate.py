"""Evaluation against slow, obviously-correct reference loops; excluders; errors."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import evaluate
from triplet_reid.evaluation import metrics, rerank, visualize
from conftest import ROOT, market_like, write_h5, write_market_like
from triplet_reid.excluders import diagonal, duke, market1501


def euclidean(query_embs, gallery_embs):
    """The Euclidean distances that metrics.evaluate takes."""
    return metrics.metric_distances(query_embs, gallery_embs, 'euclidean')


def sklearn_ap(y_true, y_score):
    """scikit-learn's average_precision_score, written out: sum over distinct
    thresholds of (recall increase) × precision."""
    ap, tp_before = 0.0, 0
    total = y_true.sum()
    for threshold in sorted(set(y_score), reverse=True):
        selected = y_score >= threshold
        tp = y_true[selected].sum()
        ap += (tp - tp_before) / total * tp / selected.sum()
        tp_before = tp
    return ap


def market_ap(y_true, y_score):
    """The original's Market-1501 AP, verbatim in spirit: stable sort, trapezoids."""
    y_true_sorted = y_true[np.argsort(-y_score, kind='mergesort')]
    tp = np.cumsum(y_true_sorted)
    recall = np.insert(tp / np.sum(y_true_sorted), 0, 0.)
    precision = np.insert(tp / np.arange(1, len(tp) + 1), 0, 1.)
    return np.sum(np.diff(recall) * ((precision[1:] + precision[:-1]) / 2))


def reference(query_pids, query_fids, gallery_pids, gallery_fids, dists, mask_fn, market):
    """The original evaluate.py loop, one query at a time."""
    aps, cmc = [], np.zeros(len(gallery_pids))
    for i in range(len(query_pids)):
        d = dists[i].astype(np.float64).copy()
        matches = gallery_pids == query_pids[i]
        mask = mask_fn(np.array([i]))[0]
        d[mask] = np.inf
        matches[mask] = False
        if not matches.any():
            continue
        scores = 1 / (1 + d)
        aps.append((market_ap if market else sklearn_ap)(matches, scores))
        k = np.where(matches[np.argsort(d, kind='stable')])[0][0]
        cmc[k:] += 1
    return np.mean(aps), cmc / len(query_pids), aps


@pytest.mark.parametrize('market', [False, True])
@pytest.mark.parametrize('metric', metrics.METRICS)
@pytest.mark.parametrize('quantize', [False, True])
def test_matches_reference_loop(market, metric, quantize):
    rng = np.random.default_rng(0)
    g_pids, g_fids, g_emb = market_like(rng, quantize=quantize)
    q_pids, q_fids, q_emb = market_like(rng, quantize=quantize)
    keep = q_pids != '-1'
    q_pids, q_fids, q_emb = q_pids[keep], [f.replace('bounding_box_test', 'query')
                                           for f in q_fids[keep]], q_emb[keep]
    mask = market1501.excluder(q_fids, g_fids)
    got = metrics.evaluate(q_pids, np.array(q_fids), g_pids,
                           metrics.metric_distances(q_emb, g_emb, metric), mask, batch_size=7,
                           use_market_ap=market)
    # In evaluate's batches of 7 queries: matrix products of other shapes
    # may round differently, and cosine distances of quantised embeddings
    # have near-ties that such rounding reorders.
    dists = np.concatenate([metrics.pairwise_distances(q_emb[i:i + 7], g_emb, metric)
                            for i in range(0, len(q_emb), 7)])
    m_ap, cmc, aps = reference(q_pids, q_fids, g_pids, g_fids, dists, mask, market)
    assert got['mAP'] == pytest.approx(m_ap, abs=1e-6)
    np.testing.assert_allclose(got['aps'], aps, atol=1e-6)
    np.testing.assert_allclose(got['CMC'], cmc, atol=1e-9)


def test_metrics_are_those_of_the_loss():
    from triplet_reid import loss
    assert list(metrics.METRICS) == loss.cdist.supported_metrics
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    for metric in metrics.METRICS:
        np.testing.assert_allclose(metrics.pairwise_distances(a, b, metric),
                                   loss.cdist(a, b, metric).numpy(), rtol=1e-5, atol=1e-5)


def test_hand_computed_case():
    # One query; gallery ranked by distance: miss, hit, miss, hit.
    q = np.zeros((1, 1), np.float32)
    g = np.array([[1], [2], [3], [4]], np.float32)
    g_pids = np.array(['b', 'a', 'c', 'a'])
    none = lambda idx: np.zeros((len(idx), 4), bool)
    sk = metrics.evaluate(np.array(['a']), np.array(['q']), g_pids, euclidean(q, g), none)
    # Precision at the hits: 1/2 and 2/4.
    assert sk['mAP'] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert sk['CMC'] == [0, 1, 1, 1]
    mk = metrics.evaluate(np.array(['a']), np.array(['q']), g_pids, euclidean(q, g), none,
                          use_market_ap=True)
    # Trapezoids: (1/2 + 0/1)/2 and (2/4 + 1/3)/2, each weighted by recall 1/2.
    assert mk['mAP'] == pytest.approx(0.5 * (0.25 + (0.5 + 1 / 3) / 2))
    # mINP: two true matches, the hardest at rank 4.
    assert sk['mINP'] == mk['mINP'] == pytest.approx(2 / 4)


def test_minp_averages_over_queries_and_ignores_excluded_entries():
    q = np.zeros((2, 1), np.float32)
    g = np.array([[1], [2], [3], [4]], np.float32)
    g_pids = np.array(['a', 'b', 'a', 'b'])
    # Query `a`: hits at ranks 1 and 3 → 2/3. Query `b` with its nearer hit
    # excluded: its gallery becomes a, a, b, one hit at rank 3 → 1/3.
    excluded = lambda idx: np.array([[False] * 4, [False, True, False, False]])[idx]
    result, positive, negative = metrics.evaluate_with_pairs(
        np.array(['a', 'b']), np.array(['q1', 'q2']), g_pids, euclidean(q, g), excluded)
    assert result['inps'] == pytest.approx([2 / 3, 1 / 3])
    assert result['mINP'] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert result == metrics.evaluate(np.array(['a', 'b']), np.array(['q1', 'q2']), g_pids,
                                      euclidean(q, g), excluded)
    # The pairs the excluder keeps: same identity 1, 3 (a) and 4 (b); others 2, 4 (a), 1, 3 (b).
    assert sorted(positive) == [1, 3, 4]
    assert negative.shape == (8,) and sorted(negative[np.isfinite(negative)]) == [1, 2, 3, 4]


def test_verification_hand_computed():
    positive = np.array([1.0, 2.0, 3.0, 6.0])
    negative = np.array([2.5, 4.0, 5.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0])
    v = metrics.verification(positive, negative, rates=('0.05', '0.1', '0.3', '1'),
                             curve_points=5)
    # FPR ≤ 0.05 allows no negative: accept below 2.5 → positives 1, 2 → TPR 1/2, threshold 2.
    assert v['tpr_at_fpr']['0.05'] == 0.5 and v['threshold_at_fpr']['0.05'] == 2.0
    # FPR ≤ 0.1 allows one (2.5): accept below 4 → 1, 2, 3 → 3/4, threshold 3.
    assert v['tpr_at_fpr']['0.1'] == 0.75 and v['threshold_at_fpr']['0.1'] == 3.0
    # FPR ≤ 0.3 allows three (2.5, 4, 5): below 7 → all four positives, threshold 6.
    assert v['tpr_at_fpr']['0.3'] == 1.0 and v['threshold_at_fpr']['0.3'] == 6.0
    assert v['tpr_at_fpr']['1'] == 1.0 and v['threshold_at_fpr']['1'] == 13.0
    # At threshold 3: FPR 1/10, FNR 1/4; at 2.5: FPR 1/10, FNR 2/4; at 2: FPR 0, FNR 2/4;
    # at 4: FPR 2/10, FNR 1/4 (closest: |0.2 - 0.25| = 0.05) → EER (0.2 + 0.25) / 2.
    assert v['eer'] == pytest.approx(0.225)
    assert len(v['curve']['fpr']) == 5 and v['curve']['tpr'][-1] == 1.0
    # A negative below every positive: at the strictest rate nothing is accepted.
    strict = metrics.verification(np.array([2.0]), np.array([1.0] + [5.0] * 9), rates=('0.01',))
    assert strict['tpr_at_fpr']['0.01'] == 0 and strict['threshold_at_fpr']['0.01'] is None
    assert metrics.verification(np.array([1.0]), np.zeros(0)) is None


def test_verification_selecting_the_smallest_negatives_equals_sorting_all():
    # Rounded distances give many ties; `inf` marks places without a pair.
    rng = np.random.default_rng(0)
    for shift in (6.0, 3.0, 0.0):
        positive = np.round(rng.normal(0, 1, 300), 1)
        negative = np.round(rng.normal(shift, 1, 20000), 1)
        negative[rng.random(20000) < 0.2] = np.inf
        # Rates up to 1 make the function sort every negative; small ones do not.
        full = metrics.verification(positive, negative.copy(), rates=('0.001', '0.01', '1'))
        part = metrics.verification(positive, negative.copy(), rates=('0.001', '0.01'))
        for key in ('tpr_at_fpr', 'threshold_at_fpr'):
            assert part[key] == {r: full[key][r] for r in ('0.001', '0.01')}
        assert part['eer'] == full['eer']
        # The EER against every threshold there is.
        finite = negative[np.isfinite(negative)]
        thresholds = np.r_[-np.inf, positive, finite]
        fpr = (finite[None] <= thresholds[:, None]).mean(1)
        fnr = 1 - (positive[None] <= thresholds[:, None]).mean(1)
        closest = np.abs(fpr - fnr).min()
        assert min(abs(part['eer'] - (f + r) / 2) for f, r in zip(fpr, fnr)
                   if abs(f - r) == closest) == pytest.approx(0, abs=1e-12)


def test_tied_distances():
    # Two gallery entries at the same distance, one a hit: sklearn counts both at once.
    q = np.zeros((1, 1), np.float32)
    g = np.array([[1], [-1], [2]], np.float32)
    g_pids = np.array(['b', 'a', 'a'])
    none = lambda idx: np.zeros((len(idx), 3), bool)
    sk = metrics.evaluate(np.array(['a']), np.array(['q']), g_pids, euclidean(q, g), none)
    assert sk['mAP'] == pytest.approx((1 / 2 + 2 / 3) / 2)
    mk = metrics.evaluate(np.array(['a']), np.array(['q']), g_pids, euclidean(q, g), none,
                          use_market_ap=True)
    # Stable order: b (miss), a (hit at rank 1), a (hit at rank 2).
    assert mk['mAP'] == pytest.approx(0.5 * ((1 / 2 + 0) / 2 + (2 / 3 + 1 / 2) / 2))
    assert sk['CMC'] == [0, 1, 1]


def test_query_without_match_is_skipped():
    q = np.zeros((2, 1), np.float32)
    g = np.array([[1], [2]], np.float32)
    none = lambda idx: np.zeros((len(idx), 2), bool)
    out = metrics.evaluate(np.array(['a', 'z']), np.array(['qa', 'qz']), np.array(['a', 'b']),
                           euclidean(q, g), none)
    assert out['skipped'] == ['qz'] and out['aps'] == [1.0]
    assert out['CMC'] == [0.5, 0.5]


def test_excluders():
    gallery = ['bounding_box_test/0001_c1s1_000001_00.jpg',
               'bounding_box_test/0001_c2s1_000002_00.jpg',
               'bounding_box_test/-1_c2s1_000003_00.jpg',
               'bounding_box_test/0002_c1s2_000004_00.jpg']
    query = ['query/0001_c1s1_000009_00.jpg', 'query/0002_c2s1_000010_00.jpg']
    mask = market1501.excluder(query, gallery)(np.arange(2))
    np.testing.assert_array_equal(mask, [[True, False, True, False], [False, False, True, False]])
    duke_gallery = ['0005_c2_f0046985.jpg', '0005_c5_f0051781.jpg', '0006_c2_f0030883.jpg']
    mask = duke.excluder(['0005_c2_f0000001.jpg'], duke_gallery)(np.arange(1))
    np.testing.assert_array_equal(mask, [[True, False, False]])
    names = np.array(['a.jpg', 'b.jpg'])
    np.testing.assert_array_equal(diagonal.excluder(names, names)(np.arange(2)),
                                  np.eye(2, dtype=bool))
    with pytest.raises(cli.UserError, match='`weird.jpg` does not match the Market-1501'):
        market1501.excluder(['weird.jpg'], gallery)


def test_cli_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    g_pids, g_fids, g_emb = market_like(rng)
    q_pids, q_fids, q_emb = g_pids[:10], g_fids[:10], g_emb[:10]
    query_csv = tmp_path / 'q.csv'
    query_csv.write_text(''.join('{},{}\n'.format(p, f) for p, f in zip(q_pids, q_fids)))
    gallery_csv = tmp_path / 'g.csv'
    gallery_csv.write_text(''.join('{},{}\n'.format(p, f) for p, f in zip(g_pids, g_fids)))
    q_h5 = write_h5(tmp_path / 'q.h5', emb=q_emb)
    g_h5 = write_h5(tmp_path / 'g.h5', emb=g_emb)
    out = str(tmp_path / 'result.json')
    base = ['--excluder', 'diagonal', '--query_dataset', str(query_csv), '--gallery_dataset',
            str(gallery_csv), '--metric', 'euclidean']
    assert evaluate.main(base + ['--query_embeddings', q_h5, '--gallery_embeddings', g_h5,
                                 '--filename', out]) == 0
    assert capsys.readouterr().out.startswith('mAP: ')
    result = json.load(open(out))
    assert set(result) == {'mAP', 'mINP', 'CMC', 'aps', 'metric', 'verification'}
    assert len(result['CMC']) == len(g_pids)
    assert set(result['verification']) == {'tpr_at_fpr', 'eer', 'threshold_at_fpr'}
    assert list(result['verification']['tpr_at_fpr']) == ['0.0001', '0.001', '0.01', '0.1']

    bad_rows = write_h5(tmp_path / 'bad_rows.h5', emb=q_emb[:5])
    with pytest.raises(cli.UserError, match='holds 5 embeddings but .* lists 10 images'):
        evaluate.main(base + ['--query_embeddings', bad_rows, '--gallery_embeddings', g_h5])
    no_emb = write_h5(tmp_path / 'no_emb.h5', other=q_emb)
    with pytest.raises(cli.UserError, match='holds no `emb` dataset'):
        evaluate.main(base + ['--query_embeddings', no_emb, '--gallery_embeddings', g_h5])
    flat = write_h5(tmp_path / 'flat.h5', emb=q_emb[:, 0])
    with pytest.raises(cli.UserError, match=r'has the shape \(10,\), not \(images'):
        evaluate.main(base + ['--query_embeddings', flat, '--gallery_embeddings', g_h5])
    with h5py.File(tmp_path / 'group.h5', 'w') as f:
        f.create_group('emb')
    with pytest.raises(cli.UserError, match='holds no `emb` dataset'):
        evaluate.main(base + ['--query_embeddings', str(tmp_path / 'group.h5'),
                              '--gallery_embeddings', g_h5])
    (tmp_path / 'text.h5').write_text('not HDF5')
    with pytest.raises(cli.UserError, match='cannot read the embeddings'):
        evaluate.main(base + ['--query_embeddings', str(tmp_path / 'text.h5'),
                              '--gallery_embeddings', g_h5])
    # Nothing to evaluate: every query's only match is itself, which diagonal excludes.
    single = tmp_path / 'single.csv'
    single.write_text('0001,a_c1s1_000001_00.jpg\n0002,b_c1s1_000002_00.jpg\n')
    two = write_h5(tmp_path / 'two.h5', emb=q_emb[:2])
    few = base[:2] + ['--query_dataset', str(single), '--gallery_dataset', str(single),
                      '--metric', 'euclidean', '--query_embeddings', two,
                      '--gallery_embeddings', two]
    with pytest.raises(cli.UserError, match='none of the 2 queries has a true match'):
        evaluate.main(few)
    with pytest.raises(cli.UserError, match='nearest of all query and gallery images, but '
                       'there are only 4'):
        evaluate.main(few + ['--rerank'])
    wrong_dim = write_h5(tmp_path / 'dim.h5', emb=q_emb[:, :3])
    with pytest.raises(cli.UserError, match='query embeddings have 3 dimensions but the '
                       'gallery embeddings 8'):
        evaluate.main(base + ['--query_embeddings', wrong_dim, '--gallery_embeddings', g_h5])
    for value in (np.nan, np.inf):
        poisoned = g_emb.copy()
        poisoned[[3, 17], 1] = value
        bad = write_h5(tmp_path / 'bad_values.h5', emb=poisoned)
        with pytest.raises(cli.UserError, match=r'bad_values.h5`: 2 of {} rows hold '
                           r'non-finite values \(NaN or infinity\), row 3, 17;'.format(
                               len(g_emb))):
            evaluate.main(base + ['--query_embeddings', q_h5, '--gallery_embeddings', bad,
                                  '--filename', str(tmp_path / 'never.json')])
    assert not os.path.exists(tmp_path / 'never.json')
    # Outputs that cannot be written are refused before the evaluation.
    args = base + ['--query_embeddings', q_h5, '--gallery_embeddings', g_h5]
    with pytest.raises(cli.UserError, match='cannot write --filename .* does not exist'):
        evaluate.main(args + ['--filename', str(tmp_path / 'no' / 'result.json')])
    with pytest.raises(cli.UserError, match='--filename .* is a folder'):
        evaluate.main(args + ['--filename', str(tmp_path)])
    with pytest.raises(cli.UserError, match='--plot .* is a file'):
        evaluate.main(args + ['--plot', out, '--image_root', str(tmp_path)])


def test_cli_rerank_and_plot(tmp_path, capsys):
    """--rerank and --plot through the command, in a process without TensorFlow."""
    from PIL import Image
    (q_pids, q_fids, q_emb), (g_pids, g_fids, g_emb) = write_market_like(tmp_path)
    command = [sys.executable, os.path.join(ROOT, 'evaluate.py'), '--excluder', 'market1501',
               '--metric', 'euclidean', '--query_dataset', str(tmp_path / 'q.csv'),
               '--gallery_dataset', str(tmp_path / 'g.csv'), '--query_embeddings',
               str(tmp_path / 'q.h5'), '--gallery_embeddings', str(tmp_path / 'g.h5'),
               '--rerank', '--rerank_k1', '6', '--rerank_k2', '3', '--filename',
               str(tmp_path / 'rerank.json'), '--plot', str(tmp_path / 'plots'),
               '--image_root', str(tmp_path), '--plot_queries', '3']
    # Fails if evaluate.py imports TensorFlow: the pictures and re-ranking must not.
    check = ('import runpy, sys; sys.modules["tensorflow"] = None; sys.argv = {!r}; '
             'runpy.run_path({!r}, run_name="__main__")').format(command[1:], command[1])
    done = subprocess.run([sys.executable, '-c', check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('mAP: ')
    result = json.load(open(tmp_path / 'rerank.json'))
    assert result['rerank'] == {'k1': 6, 'k2': 3, 'lambda': 0.3}
    for name in ('rankings.png', 'cmc.png', 'roc.png'):
        with Image.open(tmp_path / 'plots' / name) as image:
            assert image.format == 'PNG' and image.size[0] > 300
    # The re-ranked mAP is the one of evaluate() with the reranker.
    excluder = market1501.excluder(q_fids, g_fids)
    expected = metrics.evaluate(q_pids, q_fids, g_pids,
                                rerank.reranker(q_emb, g_emb, 'euclidean', 6, 3), excluder)
    assert result['mAP'] == pytest.approx(expected['mAP'])

    with pytest.raises(SystemExit):
        evaluate.main(command[2:command.index('--image_root')])
    assert 'needs --image_root' in capsys.readouterr().err
    base = command[2:command.index('--rerank')]
    with pytest.raises(SystemExit):
        evaluate.main(base + ['--rerank', '--rerank_k1', '4', '--rerank_k2', '6'])
    assert 'at most --rerank_k1 + 1' in capsys.readouterr().err


def test_plot_helpers():
    assert list(visualize.pick_queries(np.array([False, True, True, False, True]), 2)) == [1, 4]
    assert list(visualize.pick_queries(np.array([True, True]), 5)) == [0, 1]
    d = np.array([0.5, 0.1, 0.3, 0.2])
    indices, kinds = visualize.top_ranked(d, np.array([False, True, False, False]),
                                          np.array([True, True, False, False]), 3)
    assert list(indices) == [1, 3, 2] and list(kinds) == ['ignored', 'wrong', 'wrong']


def test_average_query_expansion_hand_computed():
    query = np.array([[1.0, 0.0]], np.float32)
    gallery = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    # Cosine similarities 1, 0 and 1/√2: the two nearest are gallery 0 and 2.
    s = 1 / np.sqrt(2)
    expected = (query[0] + 1.0 * gallery[0] + s ** 3 * gallery[2]) / (1 + 1 + s ** 3)
    got = metrics.average_query_expansion(query, gallery, 2, alpha=3.0)
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    # Processing the queries in batches changes nothing.
    many = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    np.testing.assert_allclose(metrics.average_query_expansion(many, gallery.repeat(2, 1), 3,
                                                               batch_size=2),
                               metrics.average_query_expansion(many, gallery.repeat(2, 1), 3),
                               rtol=1e-6)


def test_cli_aqe_composes_with_rerank(tmp_path, capsys):
    rng = np.random.default_rng(4)
    g_pids, g_fids, g_emb = market_like(rng)
    q_pids, q_fids, q_emb = g_pids[::5], g_fids[::5], g_emb[::5] + 0.3
    for name, pids, fids, emb in (('q', q_pids, q_fids, q_emb), ('g', g_pids, g_fids, g_emb)):
        (tmp_path / (name + '.csv')).write_text(
            ''.join('{},{}\n'.format(p, f) for p, f in zip(pids, fids)))
        write_h5(tmp_path / (name + '.h5'), emb=emb)
    base = ['--excluder', 'diagonal', '--metric', 'euclidean', '--query_dataset',
            str(tmp_path / 'q.csv'), '--gallery_dataset', str(tmp_path / 'g.csv'),
            '--query_embeddings', str(tmp_path / 'q.h5'), '--gallery_embeddings',
            str(tmp_path / 'g.h5')]
    out = str(tmp_path / 'aqe.json')
    assert evaluate.main(base + ['--aqe', '3', '--rerank', '--rerank_k1', '6', '--rerank_k2', '3',
                                 '--filename', out]) == 0
    result = json.load(open(out))
    assert result['aqe'] == {'k': 3, 'alpha': 3.0} and 'rerank' in result
    expanded = metrics.average_query_expansion(q_emb, g_emb, 3)
    excluder = diagonal.excluder(q_fids, g_fids)
    expected = metrics.evaluate(q_pids, q_fids, g_pids,
                                rerank.reranker(expanded, g_emb, 'euclidean', 6, 3), excluder)
    assert result['mAP'] == pytest.approx(expected['mAP'])
    with pytest.raises(cli.UserError, match='more neighbours than the'):
        evaluate.main(base + ['--aqe', str(len(g_pids) + 1)])


def test_folders_excluder_through_the_command(tmp_path):
    query = ['a/x_c1_0.jpg', 'b/x_c2_0.jpg']
    gallery = ['a/x_c1_1.jpg', 'b/x_c1_2.jpg', 'a/x_c2_1.jpg', 'b/x_c2_1.jpg', 'b/x_c1_1.jpg']
    # Same-camera matches are nearest, so excluding them changes the ranking.
    q_emb = np.array([[0.0], [10.0]], np.float32)
    g_emb = np.array([[0.1], [0.3], [0.5], [10.1], [10.5]], np.float32)
    for name, fids, emb in (('q', query, q_emb), ('g', gallery, g_emb)):
        (tmp_path / (name + '.csv')).write_text(''.join(
            '{},{}\n'.format(f.split('/')[0], f) for f in fids))
        write_h5(tmp_path / (name + '.h5'), emb=emb)
    base = ['--excluder', 'folders', '--metric', 'euclidean', '--query_dataset',
            str(tmp_path / 'q.csv'), '--gallery_dataset', str(tmp_path / 'g.csv'),
            '--query_embeddings', str(tmp_path / 'q.h5'), '--gallery_embeddings',
            str(tmp_path / 'g.h5')]
    out = str(tmp_path / 'r.json')
    assert evaluate.main(base + ['--camera_regex', r'_c(\d+)_', '--filename', out]) == 0
    # a: its same-camera image ignored, a wrong one, then its match (AP 1/2); b: its
    # same-camera image ignored, hits at ranks 1 and 3.
    assert json.load(open(out))['mAP'] == pytest.approx((1 / 2 + (1 + 2 / 3) / 2) / 2)
    # Without cameras every other image of the identity counts: a has hits at
    # ranks 1 and 3, b at ranks 1, 2 and 4.
    assert evaluate.main(base + ['--filename', out]) == 0
    assert json.load(open(out))['mAP'] == pytest.approx(((1 + 2 / 3) / 2 +
                                                         (1 + 1 + 3 / 4) / 3) / 2)
    with pytest.raises(cli.UserError, match='--camera_regex is for `--excluder folders`'):
        evaluate.main(base[:1] + ['diagonal'] + base[2:] + ['--camera_regex', r'_c(\d+)_'])
    with pytest.raises(cli.UserError, match='not a regular expression'):
        evaluate.main(base + ['--camera_regex', '_c(('])


def test_embeddings_of_other_rows_or_networks_and_outputs_over_inputs(tmp_path, capsys):
    rng = np.random.default_rng(2)
    g_pids, g_fids, g_emb = market_like(rng)
    csv = tmp_path / 'g.csv'
    csv.write_text(''.join('{},{}\n'.format(p, f) for p, f in zip(g_pids, g_fids)))
    shuffled = tmp_path / 'shuffled.csv'
    order = rng.permutation(len(g_fids))
    shuffled.write_text(''.join('{},{}\n'.format(g_pids[i], g_fids[i]) for i in order))

    def h5(name, checkpoint):
        path = write_h5(tmp_path / name, emb=g_emb, fids=np.array(g_fids, dtype=object).astype('S'))
        with h5py.File(path, 'a') as f:
            f.attrs.update({'experiment_root': '/exp', 'checkpoint': checkpoint})
        return path
    first, second = h5('a.h5', 'checkpoint-10'), h5('b.h5', 'checkpoint-20')
    base = ['--excluder', 'diagonal', '--metric', 'euclidean', '--gallery_dataset', str(csv),
            '--gallery_embeddings', first]
    # A CSV whose rows are not the embedded ones, in any order, is refused.
    with pytest.raises(cli.UserError, match=r'a.h5` embeds other images than `.*shuffled'
                       r'.csv` lists, in \d+ of its 81 rows: row'):
        evaluate.main(base + ['--query_dataset', str(shuffled), '--query_embeddings', first])
    # Query and gallery of two checkpoints: a warning, and the figures.
    assert evaluate.main(base + ['--query_dataset', str(csv), '--query_embeddings', second]) == 0
    printed = capsys.readouterr()
    assert 'different checkpoints of `/exp` (`checkpoint-20` and `checkpoint-10`)' in printed.err
    assert printed.out.startswith('mAP')
    assert evaluate.main(base + ['--query_dataset', str(csv), '--query_embeddings', first]) == 0
    assert 'WARNING' not in capsys.readouterr().err
    # The results never replace an input.
    for target in (str(csv), first, str(tmp_path / '.' / 'a.h5')):
        with pytest.raises(cli.UserError, match='is the same file as --(gallery|query)_'):
            evaluate.main(base + ['--query_dataset', str(csv), '--query_embeddings', first,
                                  '--filename', target])
    assert h5py.is_hdf5(first) and csv.read_text().count('\n') == 81
    # Nor a file of an experiment root, nor a file that is not an earlier result.
    experiment = tmp_path / 'exp'
    experiment.mkdir()
    for name in ('args.json', 'checkpoint', 'checkpoint-10.index'):
        (experiment / name).write_text('{"keep": 1}\n')
        with pytest.raises(cli.UserError, match='one of the files that train.py keeps'):
            evaluate.main(base + ['--query_dataset', str(csv), '--query_embeddings', first,
                                  '--filename', str(experiment / name)])
        assert (experiment / name).read_text() == '{"keep": 1}\n'
    (tmp_path / 'photo.json').write_bytes(b'\xff\xd8\xff\xe0 a JPEG')
    with pytest.raises(cli.UserError, match='exists and is not a JSON file'):
        evaluate.main(base + ['--query_dataset', str(csv), '--query_embeddings', first,
                              '--filename', str(tmp_path / 'photo.json')])


def test_huge_embeddings_give_the_same_figures_or_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(3)
    g_pids, g_fids, g_emb = market_like(rng)
    csv = tmp_path / 'g.csv'
    csv.write_text(''.join('{},{}\n'.format(p, f) for p, f in zip(g_pids, g_fids)))
    base = ['--excluder', 'market1501', '--metric', 'euclidean', '--query_dataset', str(csv),
            '--gallery_dataset', str(csv)]
    printed = []
    # A power of two scales exactly, so the figures must not move at all.
    for scale in (1, 2.0 ** 53):
        path = write_h5(tmp_path / 'x.h5', emb=g_emb * scale)
        assert evaluate.main(base + ['--query_embeddings', path, '--gallery_embeddings', path]) == 0
        printed.append(capsys.readouterr().out.split('\n')[0])
    assert printed[0] == printed[1] and 'mAP' in printed[0]
    path = write_h5(tmp_path / 'x.h5', emb=g_emb * 1e19)
    with pytest.raises(cli.UserError, match=r'x.h5`: \d+ of \d+ rows hold values larger than '
                       r'3.26e\+18 in magnitude, whose distances '
                       r'overflow, row'):
        evaluate.main(base + ['--query_embeddings', path, '--gallery_embeddings', path])


@pytest.mark.parametrize('dtype', [bool, np.int32, np.uint8])
def test_embeddings_that_are_not_floats_are_refused(tmp_path, dtype):
    (q_pids, q_fids, q_emb), _ = write_market_like(tmp_path)
    write_h5(tmp_path / 'q.h5', emb=(q_emb > 0).astype(dtype))
    with pytest.raises(cli.UserError, match=r'q.h5` holds {} values, not floats'.format(
            np.dtype(dtype))):
        evaluate.main(['--excluder', 'market1501', '--metric', 'euclidean', '--query_dataset',
                       str(tmp_path / 'q.csv'),
                       '--gallery_dataset', str(tmp_path / 'g.csv'), '--query_embeddings',
                       str(tmp_path / 'q.h5'), '--gallery_embeddings', str(tmp_path / 'g.h5')])

