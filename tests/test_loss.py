"""The loss against plain NumPy loops, values and gradients."""

import numpy as np
import pytest
import tensorflow as tf

from triplet_reid.training import collapse
from triplet_reid import loss

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
            elif metric == 'cosine':
                out[i, j] = 1 - a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j])
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


def np_margin(diff, margin):
    if margin == 'soft':
        return np.log1p(np.exp(diff))
    if margin == 'none':
        return diff
    return max(diff + margin, 0.0)


def np_batch_all(emb, pids, metric, margin, nonzero):
    """The batch's loss: the mean over every valid triplet, or over the non-zero terms."""
    dists = np_cdist(emb, emb, metric)
    terms = []
    for a in range(len(emb)):
        for p in range(len(emb)):
            for n in range(len(emb)):
                if p != a and pids[p] == pids[a] and pids[n] != pids[a]:
                    terms.append(np_margin(dists[a, p] - dists[a, n], margin))
    terms = np.array(terms)
    if nonzero and not isinstance(margin, str):
        terms = terms[terms > 0]
    return terms.mean() if len(terms) else 0.0


def np_batch_sample(emb, pids, metric, margin, noise):
    """Per anchor, the positive and negative with the largest logit plus Gumbel noise."""
    dists = np_cdist(emb, emb, metric)
    losses = []
    for a in range(len(emb)):
        pos = max((p for p in range(len(emb)) if p != a and pids[p] == pids[a]),
                  key=lambda p: dists[a, p] + noise[0, a, p])
        neg = max((n for n in range(len(emb)) if pids[n] != pids[a]),
                  key=lambda n: -dists[a, n] + noise[1, a, n])
        losses.append(np_margin(dists[a, pos] - dists[a, neg], margin))
    return np.array(losses)


def np_weighted(emb, pids, metric, margin):
    """Per anchor, softmax-weighted positive and softmin-weighted negative distances."""
    dists = np_cdist(emb, emb, metric)
    losses = []
    for a in range(len(emb)):
        pos = np.array([dists[a, p] for p in range(len(emb)) if p != a and pids[p] == pids[a]])
        neg = np.array([dists[a, n] for n in range(len(emb)) if pids[n] != pids[a]])
        pos_w = np.exp(pos - pos.max()) / np.exp(pos - pos.max()).sum()
        neg_w = np.exp(neg.min() - neg) / np.exp(neg.min() - neg).sum()
        losses.append(np_margin((pos_w * pos).sum() - (neg_w * neg).sum(), margin))
    return np.array(losses)


def numeric_gradient(function, emb, eps=1e-6):
    """Central finite differences of the scalar `function(emb)`."""
    numeric = np.zeros_like(emb)
    for idx in np.ndindex(*emb.shape):
        plus, minus = emb.copy(), emb.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (function(plus) - function(minus)) / (2 * eps)
    return numeric


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
        loss.cdist(np.zeros((2, 2)), np.zeros((2, 2)), 'chebyshev')


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
    assert loss.LOSS_CHOICES == {'batch_hard': loss.batch_hard, 'batch_all': loss.batch_all,
                                 'batch_all_mean': loss.batch_all_mean,
                                 'batch_sample': loss.batch_sample, 'weighted': loss.weighted}


def test_anchor_rows_equal_rows_of_the_square_loss():
    # Each replica mines its own anchors against the whole gathered batch.
    emb, pids = batch(seed=7, p=4, k=3)
    square = loss.batch_hard(loss.cdist(emb, emb), pids, 'soft', batch_precision_at_k=2)
    anchors = np.arange(6, 12, dtype=np.int32)
    rows = loss.batch_hard(loss.cdist(emb[anchors], emb), pids, 'soft',
                           batch_precision_at_k=2, anchors=anchors)
    np.testing.assert_allclose(rows[0].numpy(), square[0].numpy()[anchors], rtol=1e-12)
    np.testing.assert_array_equal(rows[3].numpy(), square[3].numpy()[anchors])


SEED = tf.constant([5, 7], tf.int64)


def np_loss(name, emb, pids, metric, margin):
    """The batch's loss (the mean over the anchors) of `name`, from the NumPy loops."""
    if name in ('batch_all', 'batch_all_mean'):
        return np_batch_all(emb, pids, metric, margin, nonzero=name == 'batch_all')
    if name == 'batch_sample':
        noise = loss.sampling_noise(SEED, len(emb), dtype=tf.float64).numpy()
        return np_batch_sample(emb, pids, metric, margin, noise).mean()
    return np_weighted(emb, pids, metric, margin).mean()


@pytest.mark.parametrize('name', ['batch_all', 'batch_all_mean', 'batch_sample', 'weighted'])
@pytest.mark.parametrize('metric', METRICS)
@pytest.mark.parametrize('margin', MARGINS)
def test_other_losses_values_and_gradients(name, metric, margin):
    emb, pids = batch(seed=11)
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        total = tf.reduce_mean(loss.LOSS_CHOICES[name](loss.cdist(x, x, metric),
                                                       tf.constant(pids), margin, seed=SEED))
    assert total.numpy() == pytest.approx(np_loss(name, emb, pids, metric, margin), rel=1e-9)
    grad = tape.gradient(total, x).numpy()
    numeric = numeric_gradient(lambda e: np_loss(name, e, pids, metric, margin), emb)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_per_anchor_values_of_batch_sample_and_weighted():
    emb, pids = batch(seed=12)
    dists = loss.cdist(emb, emb)
    noise = loss.sampling_noise(SEED, len(emb), dtype=tf.float64).numpy()
    np.testing.assert_allclose(loss.batch_sample(dists, pids, 0.3, seed=SEED).numpy(),
                               np_batch_sample(emb, pids, 'euclidean', 0.3, noise), rtol=1e-9)
    np.testing.assert_allclose(loss.weighted(dists, pids, 'soft').numpy(),
                               np_weighted(emb, pids, 'euclidean', 'soft'), rtol=1e-9)


def test_batch_all_nonzero_mean_is_larger_with_a_hinge():
    # A hinge leaves satisfied triplets at zero; BA≠0 averages over the others only.
    emb, pids = batch(seed=13)
    dists = loss.cdist(emb, emb)
    nonzero = tf.reduce_mean(loss.batch_all(dists, pids, 0.2)).numpy()
    every = tf.reduce_mean(loss.batch_all_mean(dists, pids, 0.2)).numpy()
    assert 0 < every < nonzero
    # Every triplet satisfied: zero, not a division by zero.
    far = np.repeat(np.arange(4.0), 3)[:, None] * 100
    assert tf.reduce_mean(loss.batch_all(loss.cdist(far, far), pids, 0.2)).numpy() == 0


def test_batch_sample_draws_follow_the_softmax_of_the_distances():
    # One anchor's three positives at distances 1, 2 and 3, drawn 4000 times.
    logits = tf.constant([[1.0, 2.0, 3.0]])
    noise = loss.sampling_noise(SEED, 4000)[0, :, :3]
    drawn = loss.gumbel_argmax(tf.repeat(logits, 4000, axis=0), tf.ones((4000, 3), tf.bool),
                               noise).numpy()
    frequencies = np.bincount(drawn, minlength=3) / 4000
    np.testing.assert_allclose(frequencies, tf.nn.softmax(logits)[0].numpy(), atol=0.03)
    # The draws are a function of the seed alone.
    emb, pids = batch(seed=14)
    dists = loss.cdist(emb, emb)
    first = loss.batch_sample(dists, pids, 'soft', seed=SEED).numpy()
    np.testing.assert_array_equal(first, loss.batch_sample(dists, pids, 'soft', seed=SEED))
    assert not np.array_equal(first, loss.batch_sample(dists, pids, 'soft', seed=SEED + 1))
    with pytest.raises(ValueError, match='needs the stateless `seed`'):
        loss.batch_sample(dists, pids, 'soft')


@pytest.mark.parametrize('name', ['batch_hard', 'batch_sample', 'weighted'])
def test_anchor_rows_of_every_per_anchor_loss(name):
    # batch_all's shares depend on the count over all replicas, which the
    # distributed test checks; the others are plain rows.
    emb, pids = batch(seed=15)
    function = loss.LOSS_CHOICES[name]
    square = function(loss.cdist(emb, emb), pids, 'soft', seed=SEED).numpy()
    anchors = np.arange(6, 12, dtype=np.int32)
    rows = function(loss.cdist(emb[anchors], emb), pids, 'soft', anchors=anchors, seed=SEED)
    np.testing.assert_allclose(rows.numpy(), square[anchors], rtol=1e-12)


@pytest.mark.parametrize('name', list(loss.LOSS_CHOICES))
def test_every_loss_in_float16_and_inside_tf_function(name):
    emb, pids = batch(seed=16)

    @tf.function
    def run(e, p):
        return loss.LOSS_CHOICES[name](loss.cdist(e, e), p, 'soft', seed=SEED)

    str_pids = tf.constant(['{:04d}'.format(p) for p in pids])
    for dtype in (tf.float16, tf.float32):
        out = run(tf.constant(emb, dtype), str_pids).numpy()
        assert out.shape == (len(emb),) and np.all(np.isfinite(out))


def test_embedding_spread_and_collapse_value():
    rng = np.random.default_rng(17)
    pids = np.repeat(np.arange(4), 4)
    mask = ~np.eye(16, dtype=bool)
    healthy = rng.normal(size=(16, 32))
    collapsed = np.ones((16, 32)) * 3 + rng.normal(size=(16, 32)) * 1e-3
    at_origin = np.zeros((16, 32))
    for metric in METRICS:
        # Zero embeddings have no direction, so cosine distances cannot see
        # a collapse onto the origin.
        cases = (healthy, collapsed) + ((at_origin,) if metric != 'cosine' else ())
        spread = [collapse.embedding_spread(loss.cdist(e, e, metric), mask, e, metric).numpy()
                  for e in cases]
        assert spread[0] > 0.5 and max(spread[1:]) < 0.01, (metric, spread)
    # All distances equal: every loss sits at the collapse value.
    dists = tf.ones((16, 16), tf.float64)
    for margin in MARGINS:
        for name, function in loss.LOSS_CHOICES.items():
            value = tf.reduce_mean(function(dists, pids, margin, seed=SEED)).numpy()
            assert value == pytest.approx(collapse.collapse_value(margin)), (name, margin)


def np_identity_loss(logits, labels, smoothing):
    """Cross-entropy against smoothed one-hot targets, one image at a time."""
    losses = []
    for row, label in zip(logits, labels):
        log_p = row - row.max() - np.log(np.exp(row - row.max()).sum())
        target = np.full(len(row), smoothing / len(row))
        target[label] += 1 - smoothing
        losses.append(-(target * log_p).sum())
    return np.array(losses)


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.5])
def test_identity_loss_values_and_gradients(smoothing):
    rng = np.random.default_rng(21)
    logits, labels = rng.normal(size=(6, 5)) * 3, np.array([0, 1, 4, 4, 2, 0])
    values = loss.identity_loss(tf.constant(logits), labels, smoothing).numpy()
    np.testing.assert_allclose(values, np_identity_loss(logits, labels, smoothing), rtol=1e-10)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss.identity_loss(x, labels, smoothing))
    numeric = numeric_gradient(lambda z: np_identity_loss(z, labels, smoothing).sum(), logits)
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), numeric, atol=1e-6)


def test_center_loss_values_and_both_gradients():
    rng = np.random.default_rng(22)
    emb, centers = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    labels = np.array([0, 0, 3, 1, 3, 3])

    def np_center_loss(e, c):
        return np.array([np.sum((e[i] - c[labels[i]]) ** 2) for i in range(len(e))])

    np.testing.assert_allclose(loss.center_loss(tf.constant(emb), centers, labels).numpy(),
                               np_center_loss(emb, centers), rtol=1e-10)
    # The embeddings' gradient, with the centers held constant.
    x, c = tf.Variable(emb), tf.Variable(centers)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss.center_loss(x, c, labels))
    grad_emb, grad_centers = tape.gradient(total, [x, c])
    assert grad_centers is None
    np.testing.assert_allclose(grad_emb.numpy(), numeric_gradient(
        lambda e: np_center_loss(e, centers).sum(), emb), atol=1e-6)
    # The centers' own gradient, identity 2 (no image) unchanged.
    expected = numeric_gradient(lambda cc: np_center_loss(emb, cc).sum(), centers)
    np.testing.assert_allclose(loss.center_gradient(tf.constant(emb), tf.constant(centers),
                                                    labels).numpy(), expected, atol=1e-6)
    assert not expected[2].any()


def numpy_margin_logits(name, emb, kernel, labels, s, m):
    """The margin softmaxes' logits as their papers write them, in NumPy."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    weights = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    cos = np.clip(unit @ weights, -1, 1)
    true = np.eye(kernel.shape[1], dtype=bool)[labels]
    if name == 'cosface':
        return s * np.where(true, cos - m, cos)
    if name == 'arcface':
        theta = np.arccos(cos)
        shifted = np.where(theta + m < np.pi, np.cos(theta + m), cos - m * np.sin(m))
        return s * np.where(true, shifted, cos)
    alpha_p, alpha_n = np.maximum(1 + m - cos, 0), np.maximum(cos + m, 0)
    return s * np.where(true, alpha_p * (cos - (1 - m)), alpha_n * (cos - m))


@pytest.mark.parametrize('name', ['cosface', 'arcface', 'circle'])
def test_margin_softmaxes_against_numpy(name):
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(12, 6)).astype(np.float32)
    kernel = rng.normal(size=(6, 5)).astype(np.float32)
    # One embedding almost opposite its class, where ArcFace's θ + m passes π.
    emb[0] = -kernel[:, 3] + 0.01
    labels = np.array([3] + list(rng.integers(0, 5, 11)), np.int32)
    margin = loss.ID_MARGINS[name]
    expected = numpy_margin_logits(name, emb.astype(np.float64), kernel.astype(np.float64),
                                   labels, 30.0, margin)
    logits = loss.ID_LOSSES[name](loss.cosine_logits(emb, kernel), labels, 30.0, margin)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=2e-3)
    # CosFace and ArcFace: the true class loses what the margin takes, so the
    # loss is above plain softmax over the scaled cosines, which zero margin is.
    cos = loss.cosine_logits(emb, kernel)
    if name != 'circle':
        plain = loss.identity_loss(30.0 * cos, labels).numpy()
        assert (loss.identity_loss(logits, labels).numpy() >= plain - 1e-4).all()
        np.testing.assert_allclose(loss.ID_LOSSES[name](cos, labels, 30.0, 0.0), 30.0 * cos,
                                   rtol=1e-5, atol=1e-5)
    # Differentiable, inside a tf.function too.
    kernel_v = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss.identity_loss(tf.function(loss.ID_LOSSES[name])(
            loss.cosine_logits(emb, kernel_v), labels, 30.0, margin), labels))
    grad = tape.gradient(value, kernel_v).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
