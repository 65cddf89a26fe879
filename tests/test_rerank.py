"""k-reciprocal re-ranking against a direct, dense implementation of the
paper's formulas (with the authors' code's conventions), and in evaluate.py."""

import numpy as np
import pytest

from triplet_reid.evaluation import metrics, rerank
from triplet_reid.excluders import diagonal


def paper_rerank(query, gallery, k1, k2, lam):
    """Zhong et al. 2017, written as the formulas read, with dense matrices and sets.

    d is the squared Euclidean distance over query and gallery images, each
    row divided by its maximum (as the authors' code does). With `gallery`
    None, the queries against each other.
    """
    x = np.concatenate([query] + ([] if gallery is None else [gallery])).astype(np.float64)
    n = len(x)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    d = d / d.max(1, keepdims=True)
    order = np.argsort(d, axis=1, kind='stable')

    def nearest(i, k):                      # N(i, k), eq. 2: the top-k, i itself included
        return set(order[i, :k + 1].tolist())

    def reciprocal(i, k):                   # R(i, k), eq. 3
        return {j for j in nearest(i, k) if i in nearest(j, k)}

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)                   # R*(i, k1), eq. 6
        for q in r:
            rq = reciprocal(q, half)
            if len(rq & r) > 2 / 3 * len(rq):
                expanded |= rq
        for j in expanded:                  # eq. 7
            v[i, j] = np.exp(-d[i, j])
        v[i] /= v[i].sum()
    v = np.stack([v[order[i, :k2]].mean(0) for i in range(n)])   # eq. 11
    nq = len(query)
    first = 0 if gallery is None else nq
    jaccard = np.array([[1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()
                         for g in range(first, n)] for p in range(nq)])   # eq. 10
    return (1 - lam) * jaccard + lam * d[:nq, first:]                    # eq. 12


@pytest.mark.parametrize('k1, k2, lam, dim', [(20, 6, 0.3, 16), (7, 3, 0.5, 4), (4, 1, 0.0, 8)])
def test_matches_the_formulas(k1, k2, lam, dim):
    rng = np.random.default_rng(k1)
    # Clustered points, so that reciprocal sets and expansions are non-trivial.
    centres = rng.normal(size=(12, dim))
    labels = rng.integers(0, 12, 150)
    x = (centres[labels] + 0.6 * rng.normal(size=(150, dim))).astype(np.float32)
    query, gallery = x[:40], x[40:]
    expected = paper_rerank(query, gallery, k1, k2, lam)
    distances = rerank.reranker(query, gallery, 'euclidean', k1, k2, lam)
    got = np.concatenate([distances(np.arange(s, min(s + 16, 40))) for s in range(0, 40, 16)])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # Chunking the queries to bound memory changes nothing.
    chunked = rerank.reranker(query, gallery, 'euclidean', k1, k2, lam, max_terms=50)
    np.testing.assert_array_equal(chunked(np.arange(40)), distances(np.arange(40)))
    # Re-ranking changes the order, not just the scale.
    plain = ((query[:, None] - gallery[None]) ** 2).sum(-1)
    assert (np.argsort(got, 1) != np.argsort(plain, 1)).any()


def test_one_set_against_itself_holds_each_image_once():
    """associate.py re-ranks tracks against each other: the formulas over
    the one set, both directions averaged, and k1, k2 shrunk for a set
    smaller than they are."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 6))
    x = (centres[rng.integers(0, 8, 60)] + 0.6 * rng.normal(size=(60, 6))).astype(np.float32)
    expected = paper_rerank(x, None, 7, 3, 0.3)
    got = rerank.reranked_matrix(x, 'euclidean', 7, 3, 0.3, block=16)
    np.testing.assert_allclose(got, (expected + expected.T) / 2, atol=2e-5)
    assert got.dtype == np.float32 and (np.diag(got) < 1e-6).all()
    # One track has nothing to re-rank by.
    assert rerank.reranked_matrix(x[:1]).tolist() == [[0.0]]
    small = rerank.reranked_matrix(x[:3], 'euclidean')
    np.testing.assert_allclose(small, (lambda e: (e + e.T) / 2)(paper_rerank(x[:3], None, 2, 3,
                                                                            0.3)), atol=2e-5)


def test_sqeuclidean_is_the_same_and_k2_is_checked():
    rng = np.random.default_rng(1)
    query, gallery = rng.normal(size=(10, 5)), rng.normal(size=(30, 5))
    a = rerank.reranker(query, gallery, 'euclidean', 5, 2)(np.arange(10))
    b = rerank.reranker(query, gallery, 'sqeuclidean', 5, 2)(np.arange(10))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match='k2 must lie between'):
        rerank.reranker(query, gallery, 'euclidean', 5, 7)


def test_rerank_improves_a_noisy_ranking():
    """Neighbourhoods carry information the pairwise distance lacks: with
    several gallery images per identity, re-ranking raises the mAP."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 32))
    q_pids = np.repeat(np.arange(60), 2)
    g_pids = np.repeat(np.arange(60), 8)
    q = centres[q_pids] + 0.9 * rng.normal(size=(len(q_pids), 32))
    g = centres[g_pids] + 0.9 * rng.normal(size=(len(g_pids), 32))
    q_fids = np.array(['q{}'.format(i) for i in range(len(q))])
    g_fids = np.array(['g{}'.format(i) for i in range(len(g))])
    excluder = diagonal.excluder(q_fids, g_fids)
    plain = metrics.evaluate(q_pids, q_fids, g_pids, metrics.metric_distances(q, g, 'euclidean'),
                             excluder)
    reranked = metrics.evaluate(q_pids, q_fids, g_pids, rerank.reranker(q, g, 'euclidean'),
                                excluder)
    assert reranked['mAP'] > plain['mAP'] + 0.02
