"""Distances and the triplet losses of arxiv.org/abs/1703.07737 and after.

Every loss in `LOSS_CHOICES` is a function

    loss(dists, pids, margin, anchors=None, seed=None) -> (A,) losses

of the (A, B) distances from A anchors to the B entries of the batch, the
(B,) identities, the margin (see `apply_margin`), the anchors' positions in
the batch (None: every entry is an anchor, A = B) and the step's stateless
seed of shape (2,) for losses that draw at random. The batch's loss is the
sum of the returned values over all anchors of the batch divided by their
number, also when a `tf.distribute` step splits the anchors over replicas.

Everything here is vectorised over the whole batch (no `map_fn`, no Python
loops) and works for float16, bfloat16, float32 and float64 inputs.
"""

import numbers

import numpy as np
import tensorflow as tf

from triplet_reid.evaluation.metrics import METRICS


def all_diffs(a, b):
    """All pairwise differences `a[i] - b[j]`.

    Args:
        a: (B1, F) tensor.
        b: (B2, F) tensor.

    Returns:
        (B1, B2, F) tensor.
    """
    return tf.expand_dims(a, axis=1) - tf.expand_dims(b, axis=0)


def cdist(a, b, metric='euclidean'):
    """All pairwise distances, like scipy.spatial.distance.cdist.

    The supported metrics are listed in `cdist.supported_metrics`:
        - 'euclidean', with 1e-12 added under the square root because its
          gradient at zero is undefined; it thus never returns exactly zero.
        - 'sqeuclidean', the squared Euclidean distance.
        - 'cityblock', the Manhattan or L1 distance.
        - 'cosine', one minus the cosine similarity, in [0, 2]; the lengths
          of the embeddings do not matter (a zero embedding counts as
          orthogonal to all others).

    Args:
        a: (B1, F) tensor.
        b: (B2, F) tensor.
        metric (str): One of `cdist.supported_metrics`.

    Returns:
        (B1, B2) tensor of distances.
    """
    with tf.name_scope('cdist'):
        if metric == 'cosine':
            a, b = tf.math.l2_normalize(a, axis=1), tf.math.l2_normalize(b, axis=1)
            return 1.0 - tf.matmul(a, b, transpose_b=True)
        diffs = all_diffs(a, b)
        if metric == 'sqeuclidean':
            return tf.reduce_sum(tf.square(diffs), axis=-1)
        if metric == 'euclidean':
            return tf.sqrt(tf.reduce_sum(tf.square(diffs), axis=-1) + 1e-12)
        if metric == 'cityblock':
            return tf.reduce_sum(tf.abs(diffs), axis=-1)
        raise NotImplementedError(
            'The following metric is not implemented by `cdist` yet: {}'.format(metric))


# One list of metrics for training and evaluation, kept in TensorFlow-free evaluation/metrics.py.
cdist.supported_metrics = list(METRICS)


def apply_margin(diff, margin):
    """Turns `d(a, p) - d(a, n)` into a loss: hinge for a number, softplus for 'soft'.

    Args:
        diff: tensor of any shape.
        margin: a non-negative number, 'soft', or 'none' (the raw difference).
    """
    if isinstance(margin, numbers.Real):
        return tf.maximum(diff + margin, 0.0)
    if margin == 'soft':
        return tf.nn.softplus(diff)
    if margin.lower() == 'none':
        return diff
    raise NotImplementedError('The margin {} is not implemented in batch_hard'.format(margin))


def identity_masks(pids, anchors=None):
    """Which batch entries share each anchor's identity.

    Args:
        pids: (B,) identities of the batch entries, of any comparable dtype.
        anchors: (A,) int32 positions of the anchors within the batch, or None
            for every entry (A = B).

    Returns:
        (same_identity (A, B), positive (A, B), negative (A, B)) booleans,
        where positives exclude the anchor itself.
    """
    batch_size = tf.shape(pids)[0]
    if anchors is None:
        anchors = tf.range(batch_size)
    same_identity = tf.equal(tf.expand_dims(tf.gather(pids, anchors), 1),
                             tf.expand_dims(pids, 0))
    is_self = tf.cast(tf.one_hot(anchors, batch_size), tf.bool)
    return same_identity, tf.math.logical_xor(same_identity, is_self), \
        tf.logical_not(same_identity)


def batch_hard(dists, pids, margin, batch_precision_at_k=None, anchors=None, seed=None):
    """The batch-hard triplet loss: each anchor's furthest positive and closest negative.

    Args:
        dists: (A, B) distances from the anchors to all B batch entries, as
            given by `cdist`; square (B, B) when every entry is an anchor.
        pids: (B,) identities of the batch entries, of any comparable dtype.
        margin: a number, 'soft' or 'none', see `apply_margin`.
        batch_precision_at_k (int or None): When given, also compute the
            monitoring values.
        anchors: (A,) int32 positions of the anchors within the batch, or None
            when every entry is an anchor. With several replicas, each one
            mines its own anchors against the whole gathered batch.
        seed: Unused; batch-hard draws nothing.

    Returns:
        Without `batch_precision_at_k`: the (A,) per-anchor losses. With it, a
        tuple (losses (A,), top1 (), prec_at_k (), topk_is_same (A, k) bool,
        negative_dists (N,), positive_dists (M,)), where the distances are all
        entries of `dists` between different, respectively same, identities
        (the anchors themselves excluded).
    """
    with tf.name_scope('batch_hard'):
        same_identity_mask, positive_mask, negative_mask = identity_masks(pids, anchors)
        # Distances are non-negative, so zero stands in for "no positive" as
        # in the original, and +inf for "no negative" as an empty reduce_min.
        furthest_positive = tf.reduce_max(
            tf.where(positive_mask, dists, tf.zeros_like(dists)), axis=1)
        closest_negative = tf.reduce_min(
            tf.where(negative_mask, dists, tf.fill(tf.shape(dists), tf.constant(
                float('inf'), dists.dtype))), axis=1)
        losses = apply_margin(furthest_positive - closest_negative, margin)

    if batch_precision_at_k is None:
        return losses
    return (losses,) + batch_monitoring(dists, same_identity_mask, positive_mask,
                                        negative_mask, batch_precision_at_k)


def replica_sum(value):
    """`value` summed over the replicas of a `tf.distribute` step; `value` itself
    outside one or with a single replica."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _batch_all(dists, pids, margin, anchors, nonzero):
    """Every valid triplet of the batch, averaged over all of them or over the
    non-zero ones, as per-anchor shares of that average.

    Returns:
        (A,) values: each anchor's summed triplet terms times the number of
        anchors over the number of counted terms, both taken over all
        replicas, so that their mean over the anchors is the batch's average.
    """
    _, positive_mask, negative_mask = identity_masks(pids, anchors)
    # (A, B, B): anchor, positive, negative.
    valid = tf.logical_and(positive_mask[:, :, None], negative_mask[:, None, :])
    terms = tf.where(valid, apply_margin(dists[:, :, None] - dists[:, None, :], margin),
                     tf.zeros([], dists.dtype))
    counted = tf.logical_and(valid, terms > 0) if nonzero else valid
    count = tf.stop_gradient(replica_sum(tf.reduce_sum(tf.cast(counted, dists.dtype))))
    num_anchors = replica_sum(tf.cast(tf.shape(dists)[0], dists.dtype))
    return tf.reduce_sum(terms, axis=[1, 2]) * num_anchors / tf.maximum(count, 1)


def batch_all(dists, pids, margin, anchors=None, seed=None):
    """The batch-all loss averaged over its non-zero terms only (the paper's BA≠0).

    Every (anchor, positive, negative) triplet of the batch contributes
    `apply_margin(d(a, p) - d(a, n))`; their sum is divided by the number of
    terms that are not zero, so that the many triplets a hinge margin already
    satisfies do not dilute the rest. The soft margin and 'none' have no zero
    terms, so with them this equals `batch_all_mean`.

    Args:
        dists: (A, B) distances from the anchors to the batch entries.
        pids: (B,) identities of the batch entries.
        margin: a number, 'soft' or 'none', see `apply_margin`.
        anchors: (A,) int32 positions of the anchors, or None for all.
        seed: Unused.

    Returns:
        (A,) per-anchor shares whose mean over all anchors is the loss.
    """
    with tf.name_scope('batch_all'):
        return _batch_all(dists, pids, margin, anchors, nonzero=isinstance(margin, numbers.Real))


def batch_all_mean(dists, pids, margin, anchors=None, seed=None):
    """The batch-all loss averaged over every valid triplet (the paper's BA).

    Arguments and return value as `batch_all`.
    """
    with tf.name_scope('batch_all_mean'):
        return _batch_all(dists, pids, margin, anchors, nonzero=False)


def sampling_noise(seed, batch_size, anchors=None, dtype=tf.float32):
    """Gumbel noise for `batch_sample`: (2, A, B), for the positive and the negative.

    The noise of anchor `a` depends on the seed and on `a`'s position in the
    whole batch only, so a replica that holds some of the anchors draws what a
    single device would draw for them.
    """
    uniform = tf.random.stateless_uniform([2, batch_size, batch_size], seed,
                                          minval=1e-20, maxval=1.0, dtype=tf.float32)
    noise = -tf.math.log(-tf.math.log(uniform))
    if anchors is not None:
        noise = tf.gather(noise, anchors, axis=1)
    return tf.cast(noise, dtype)


def gumbel_argmax(logits, mask, noise):
    """Draws one column per row from softmax(logits) restricted to `mask`.

    The Gumbel-max trick: the argmax of logits plus Gumbel noise is a draw
    from the softmax of the logits.

    Args:
        logits, noise: (A, B) floats.
        mask: (A, B) booleans, the candidates of each row.

    Returns:
        (A,) int32 column indices (0 for a row without candidates).
    """
    scores = tf.where(mask, logits + noise, tf.fill(tf.shape(logits), tf.constant(
        float('-inf'), logits.dtype)))
    return tf.argmax(scores, axis=1, output_type=tf.int32)


def batch_sample(dists, pids, margin, anchors=None, seed=None):
    """The batch-sample loss: per anchor, one positive and one negative drawn at random.

    The positive is drawn from the softmax of the anchor's positive distances
    and the negative from the softmax of its negated negative distances, so
    far positives and near negatives are the likeliest, yet every triplet can
    be drawn. The draws come from the stateless `seed`, so a resumed run
    draws what the uninterrupted one drew; gradients flow through the drawn
    distances, not through the draw.

    Args:
        dists: (A, B) distances from the anchors to the batch entries.
        pids: (B,) identities of the batch entries.
        margin: a number, 'soft' or 'none', see `apply_margin`.
        anchors: (A,) int32 positions of the anchors, or None for all.
        seed: (2,) int stateless seed of the step; required.

    Returns:
        (A,) per-anchor losses.
    """
    if seed is None:
        raise ValueError('batch_sample draws at random and needs the stateless `seed`.')
    with tf.name_scope('batch_sample'):
        _, positive_mask, negative_mask = identity_masks(pids, anchors)
        noise = sampling_noise(seed, tf.shape(pids)[0], anchors, dists.dtype)
        fixed = tf.stop_gradient(dists)
        positive = tf.gather(dists, gumbel_argmax(fixed, positive_mask, noise[0]), batch_dims=1)
        negative = tf.gather(dists, gumbel_argmax(-fixed, negative_mask, noise[1]),
                             batch_dims=1)
        # As in batch_hard: no positive counts as zero, no negative as +inf.
        positive = tf.where(tf.reduce_any(positive_mask, axis=1), positive,
                            tf.zeros_like(positive))
        negative = tf.where(tf.reduce_any(negative_mask, axis=1), negative,
                            tf.fill(tf.shape(negative), tf.constant(float('inf'), dists.dtype)))
        return apply_margin(positive - negative, margin)


def soft_weights(logits, mask):
    """Per row, the softmax of `logits` over the entries where `mask`, zero elsewhere.

    Args:
        logits: (A, B) floats.
        mask: (A, B) booleans.

    Returns:
        (A, B) weights; each row sums to one, or to zero when it has no entry.
    """
    top = tf.reduce_max(tf.where(mask, logits, tf.fill(tf.shape(logits), tf.constant(
        float('-inf'), logits.dtype))), axis=1, keepdims=True)
    top = tf.stop_gradient(tf.where(tf.math.is_finite(top), top, tf.zeros_like(top)))
    # The inner `where` keeps exp() of masked-out entries finite, so that
    # their zero gradient does not become 0 * inf = NaN.
    exp = tf.where(mask, tf.exp(tf.where(mask, logits, top) - top), tf.zeros_like(logits))
    total = tf.reduce_sum(exp, axis=1, keepdims=True)
    return exp / tf.maximum(total, tf.constant(1e-30, logits.dtype))


def weighted(dists, pids, margin, anchors=None, seed=None):
    """The weighted triplet loss of Ristani and Tomasi (CVPR 2018).

    Instead of batch-hard's hardest positive and negative, each anchor takes
    the average of its positive distances weighted by their softmax and of its
    negative distances weighted by their softmin, so every pair contributes
    and the hardest ones most. Gradients flow through the weights too, as in
    fast-reid. Arguments as `batch_all` (the seed is unused).

    Returns:
        (A,) per-anchor losses.
    """
    with tf.name_scope('weighted'):
        _, positive_mask, negative_mask = identity_masks(pids, anchors)
        positive = tf.reduce_sum(soft_weights(dists, positive_mask) * dists, axis=1)
        negative = tf.reduce_sum(soft_weights(-dists, negative_mask) * dists, axis=1)
        # As in batch_hard: no negative counts as +inf.
        negative = tf.where(tf.reduce_any(negative_mask, axis=1), negative,
                            tf.fill(tf.shape(negative), tf.constant(float('inf'), dists.dtype)))
        return apply_margin(positive - negative, margin)


def top_k_precision(dists, same_identity_mask, k):
    """Within-batch retrieval: how often the k nearest entries share the identity.

    Static shapes only, so it also compiles with XLA.

    Args:
        dists: (A, B) distances; each anchor's own entry is its nearest.
        same_identity_mask: (A, B) booleans.
        k (int): Neighbours to look at besides the anchor itself.

    Returns:
        (top1 (), prec_at_k (), topk_is_same (A, k) bool).
    """
    # The nearest entry is the anchor itself, so look at k+1 and drop it.
    _, indices = tf.math.top_k(-dists, k=k + 1)
    topk_is_same = tf.gather(same_identity_mask, indices[:, 1:], batch_dims=1)
    topk_is_same_f32 = tf.cast(topk_is_same, tf.float32)
    return tf.reduce_mean(topk_is_same_f32[:, 0]), tf.reduce_mean(topk_is_same_f32), \
        topk_is_same


def batch_monitoring(dists, same_identity_mask, positive_mask, negative_mask, k):
    """The original's monitoring values: `top_k_precision` and the distances
    between different and same identities.

    Returns:
        (top1 (), prec_at_k (), topk_is_same (A, k) bool, negative_dists (N,),
        positive_dists (M,)).
    """
    with tf.name_scope('monitoring'):
        top1, prec_at_k, topk_is_same = top_k_precision(dists, same_identity_mask, k)
        negative_dists = tf.boolean_mask(dists, negative_mask)
        positive_dists = tf.boolean_mask(dists, positive_mask)
        return top1, prec_at_k, topk_is_same, negative_dists, positive_dists


def identity_loss(logits, labels, smoothing=0.0):
    """Softmax cross-entropy over the training identities, with label smoothing.

    The target puts 1 - smoothing + smoothing / C on the true identity and
    smoothing / C on every other (Szegedy et al. 2016, as BoT).

    Args:
        logits: (B, C) classifier outputs.
        labels: (B,) int identities in [0, C).
        smoothing (float): In [0, 1).

    Returns:
        (B,) per-image losses.
    """
    with tf.name_scope('identity_loss'):
        classes = tf.shape(logits)[1]
        targets = tf.one_hot(labels, classes, dtype=logits.dtype) * (1.0 - smoothing) + \
            smoothing / tf.cast(classes, logits.dtype)
        return -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=1)


def cosine_logits(emb, kernel):
    """The cosines between embeddings and class weights, the margin-softmax
    losses' input.

    Args:
        emb: (B, D) embeddings.
        kernel: (D, C) the classifier's weights, a column per class.

    Returns:
        (B, C) cosines in [-1, 1].
    """
    return tf.clip_by_value(tf.linalg.matmul(tf.math.l2_normalize(emb, axis=1),
                                             tf.math.l2_normalize(kernel, axis=0)), -1.0, 1.0)


def cosface(cosine, labels, scale, margin):
    """CosFace (Wang et al. 2018): s·(cos θ − m) for the true class, s·cos θ
    for the others.

    Args:
        cosine: (B, C) cosines (`cosine_logits`).
        labels: (B,) int classes.
        scale, margin (float): s and m.

    Returns:
        (B, C) logits for `identity_loss`.
    """
    true = tf.one_hot(labels, tf.shape(cosine)[1], dtype=cosine.dtype)
    return scale * (cosine - margin * true)


def arcface(cosine, labels, scale, margin):
    """ArcFace (Deng et al. 2019): s·cos(θ + m) for the true class, s·cos θ
    for the others; where θ + m would pass π, the true logit is
    s·(cos θ − m·sin m) instead, as insightface does, so that it keeps
    falling with θ.

    Args, Returns: as `cosface`.
    """
    true = tf.one_hot(labels, tf.shape(cosine)[1], dtype=cosine.dtype)
    sine = tf.sqrt(tf.maximum(1.0 - tf.square(cosine), 0.0))
    shifted = cosine * tf.cos(margin) - sine * tf.sin(margin)
    shifted = tf.where(cosine > tf.cos(np.pi - margin), shifted,
                       cosine - margin * tf.sin(margin))
    return scale * tf.where(true > 0, shifted, cosine)


def circle(cosine, labels, scale, margin):
    """Circle loss at the class level (Sun et al. 2020; fast-reid's
    CircleSoftmax): the true class's logit s·α_p·(cos θ − (1 − m)) with
    α_p = max(1 + m − cos θ, 0), the others' s·α_n·(cos θ − m) with
    α_n = max(cos θ + m, 0); the weights α are not differentiated through.

    Args, Returns: as `cosface`.
    """
    true = tf.one_hot(labels, tf.shape(cosine)[1], dtype=cosine.dtype)
    alpha_p = tf.stop_gradient(tf.nn.relu(1.0 + margin - cosine))
    alpha_n = tf.stop_gradient(tf.nn.relu(cosine + margin))
    return scale * tf.where(true > 0, alpha_p * (cosine - (1.0 - margin)),
                            alpha_n * (cosine - margin))


def center_loss(emb, centers, labels):
    """The center loss of Wen et al. 2016, as BoT: each embedding's squared
    Euclidean distance to its identity's center. The centers are constants
    here; `center_gradient` gives their own update.

    Args:
        emb: (B, D) embeddings.
        centers: (C, D) one center per identity.
        labels: (B,) int identities in [0, C).

    Returns:
        (B,) per-image losses.
    """
    with tf.name_scope('center_loss'):
        own = tf.stop_gradient(tf.gather(tf.cast(centers, emb.dtype), labels))
        return tf.reduce_sum(tf.square(emb - own), axis=1)


def center_gradient(emb, centers, labels):
    """The gradient of `center_loss`'s sum with respect to the centers, the
    embeddings held constant: -2 Σ_{i: labels_i = c} (emb_i - centers_c).

    Args and shapes as `center_loss`; returns (C, D).
    """
    with tf.name_scope('center_gradient'):
        diff = tf.stop_gradient(emb) - tf.gather(centers, labels)
        return -2.0 * tf.math.unsorted_segment_sum(diff, labels, tf.shape(centers)[0])


# The identity losses: `softmax` takes the classifier's logits as they are;
# the margin softmaxes take `cosine_logits` and give logits for
# `identity_loss`. Their default margins are the papers'.
ID_LOSSES = {
    'softmax': None,
    'cosface': cosface,
    'arcface': arcface,
    'circle': circle,
}
ID_MARGINS = {'cosface': 0.35, 'arcface': 0.5, 'circle': 0.25}

LOSS_CHOICES = {
    'batch_hard': batch_hard,
    'batch_all': batch_all,
    'batch_all_mean': batch_all_mean,
    'batch_sample': batch_sample,
    'weighted': weighted,
}
