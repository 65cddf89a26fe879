"""The loss against plain NumPy loops, values and gradients."""

import numpy as np
import pytest
import tensorflow as tf

import loss

METRICS = loss.cdist.supported_metrics
MARGINS = [0.2, 'soft', 'none']


def np_cdist(a, b, metric):
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            d = a[i] - b[j]
            if metric == 'euclidean':
                out[i, j] = np.sqrt(np.sum(d * d) + 1e-12)
            elif metric == 'sqeuclidean':
                out[i, j] = np.sum(d * d)
            else:
                out[i, j] = np.sum(np.abs(d))
    return out


def np_batch_hard(emb, pids, metric, margin):
    """The per-anchor loss written as the paper states it, one anchor at a time."""
    dists = np_cdist(emb, emb, metric)
    losses = []
    for a in range(len(emb)):
        pos = [dists[a, p] for p in range(len(emb)) if p != a and pids[p] == pids[a]]
        neg = [dists[a, n] for n in range(len(emb)) if pids[n] != pids[a]]
        diff = max(pos) - min(neg)
        if margin == 'soft':
            losses.append(np.log1p(np.exp(diff)))
        elif margin == 'none':
            losses.append(diff)
        else:
            losses.append(max(diff + margin, 0.0))
    return np.array(losses)


def batch(seed=0, p=4, k=3, dim=5):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(p), k)
    emb = rng.normal(size=(p * k, dim)) + pids[:, None] * 0.3
    return emb, pids


@pytest.mark.parametrize('metric', METRICS)
def test_cdist_matches_numpy(metric):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    np.testing.assert_allclose(loss.cdist(a, b, metric).numpy(), np_cdist(a, b, metric),
                               rtol=1e-10)


def test_cdist_unknown_metric():
    with pytest.raises(NotImplementedError):
        loss.cdist(np.zeros((2, 2)), np.zeros((2, 2)), 'cosine')


@pytest.mark.parametrize('metric', METRICS)
@pytest.mark.parametrize('margin', MARGINS)
def test_batch_hard_values_and_gradients(metric, margin):
    emb, pids = batch()
    expected = np_batch_hard(emb, pids, metric, margin)
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        losses = loss.batch_hard(loss.cdist(x, x, metric), tf.constant(pids), margin)
        total = tf.reduce_sum(losses)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-9, atol=1e-12)

    # Central finite differences of the NumPy loop implementation.
    grad = tape.gradient(total, x).numpy()
    numeric = np.zeros_like(emb)
    eps = 1e-6
    for idx in np.ndindex(*emb.shape):
        plus, minus = emb.copy(), emb.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (np_batch_hard(plus, pids, metric, margin).sum() -
                        np_batch_hard(minus, pids, metric, margin).sum()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_batch_hard_string_pids_inside_tf_function():
    emb, pids = batch(seed=3)
    str_pids = tf.constant(['{:04d}'.format(p) for p in pids])

    @tf.function
    def run(e, p):
        return loss.batch_hard(loss.cdist(e, e), p, 'soft', batch_precision_at_k=2)

    out = run(tf.constant(emb, tf.float32), str_pids)
    np.testing.assert_allclose(out[0].numpy(), np_batch_hard(emb, pids, 'euclidean', 'soft'),
                               rtol=1e-4)


def test_monitoring_values():
    emb, pids = batch(seed=5, p=5, k=4)
    dists = np_cdist(emb, emb, 'euclidean')
    k = 3
    losses, top1, prec, topk_is_same, neg, pos = loss.batch_hard(
        tf.constant(dists), tf.constant(pids), 'soft', batch_precision_at_k=k)
    order = np.argsort(dists, axis=1, kind='stable')[:, 1:k + 1]
    same = pids[order] == pids[:, None]
    np.testing.assert_array_equal(topk_is_same.numpy(), same)
    assert top1.numpy() == pytest.approx(same[:, 0].mean())
    assert prec.numpy() == pytest.approx(same.mean())
    n = len(pids)
    # K-1 positives and N-K negatives per anchor.
    assert pos.shape[0] == n * 3 and neg.shape[0] == n * (n - 4)
    np.testing.assert_allclose(np.sort(pos.numpy()),
                               np.sort(dists[(pids[:, None] == pids) & ~np.eye(n, dtype=bool)]))


def test_hard_margin_zero_below_margin():
    # Identities far apart: every anchor satisfies the margin and the loss is zero.
    emb = np.array([[0.0], [0.1], [10.0], [10.1]])
    pids = np.array([0, 0, 1, 1])
    losses = loss.batch_hard(loss.cdist(emb, emb), pids, 1.0)
    np.testing.assert_allclose(losses.numpy(), 0.0)


def test_loss_choices():
    assert loss.LOSS_CHOICES['batch_hard'] is loss.batch_hard


def test_anchor_rows_equal_rows_of_the_square_loss():
    # Each replica mines its own anchors against the whole gathered batch.
    emb, pids = batch(seed=7, p=4, k=3)
    square = loss.batch_hard(loss.cdist(emb, emb), pids, 'soft', batch_precision_at_k=2)
    anchors = np.arange(6, 12, dtype=np.int32)
    rows = loss.batch_hard(loss.cdist(emb[anchors], emb), pids, 'soft',
                           batch_precision_at_k=2, anchors=anchors)
    np.testing.assert_allclose(rows[0].numpy(), square[0].numpy()[anchors], rtol=1e-12)
    np.testing.assert_array_equal(rows[3].numpy(), square[3].numpy()[anchors])
