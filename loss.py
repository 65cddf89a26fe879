"""Distances and the batch-hard triplet loss of arxiv.org/abs/1703.07737.

Everything here is vectorised over the whole batch (no `map_fn`, no Python
loops) and works for float16, bfloat16, float32 and float64 inputs.
"""

import numbers

import tensorflow as tf


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

    Args:
        a: (B1, F) tensor.
        b: (B2, F) tensor.
        metric (str): One of `cdist.supported_metrics`.

    Returns:
        (B1, B2) tensor of distances.
    """
    with tf.name_scope('cdist'):
        diffs = all_diffs(a, b)
        if metric == 'sqeuclidean':
            return tf.reduce_sum(tf.square(diffs), axis=-1)
        if metric == 'euclidean':
            return tf.sqrt(tf.reduce_sum(tf.square(diffs), axis=-1) + 1e-12)
        if metric == 'cityblock':
            return tf.reduce_sum(tf.abs(diffs), axis=-1)
        raise NotImplementedError(
            'The following metric is not implemented by `cdist` yet: {}'.format(metric))


cdist.supported_metrics = ['euclidean', 'sqeuclidean', 'cityblock']


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


def batch_hard(dists, pids, margin, batch_precision_at_k=None, anchors=None):
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


LOSS_CHOICES = {
    'batch_hard': batch_hard,
}
