"""Cluster Contrast's cluster memory (Dai et al. 2022), for training on
pseudo-identities (train.py --pseudo_labels): the loss of each embedding
against one centroid per pseudo-identity, and the centroids' update."""

import tensorflow as tf


def loss(emb, memory, labels, temperature):
    """Cluster Contrast's loss (Dai et al. 2022): a softmax over the cosine
    similarities of each embedding to every pseudo-identity's centroid in the
    cluster memory, at `temperature`, against its own. The memory is a
    constant here; `update` moves it.

    Args:
        emb: (B, D) embeddings.
        memory: (C, D) unit-length centroids, one per pseudo-identity.
        labels: (B,) int pseudo-identities in [0, C).
        temperature (float): divides the similarities.

    Returns:
        (B,) per-image losses.
    """
    with tf.name_scope('memory_loss'):
        unit = tf.math.l2_normalize(tf.cast(emb, tf.float32), axis=1)
        logits = tf.matmul(unit, tf.stop_gradient(memory), transpose_b=True) / temperature
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def update(emb, memory, labels, momentum):
    """The centroids after one batch, as Cluster Contrast's hard update: the
    centroid of each pseudo-identity in the batch moves to its least similar
    crop, `momentum` × centroid + (1 − momentum) × crop, and back to unit
    length.

    Args:
        emb: (B, D) embeddings.
        memory: (C, D) unit-length centroids.
        labels: (B,) int pseudo-identities in [0, C).
        momentum (float): how much of the old centroid is kept.

    Returns:
        (rows (U,) int, centroids (U, D)): the new values of the rows of the
        U pseudo-identities in the batch.
    """
    with tf.name_scope('memory_update'):
        unit = tf.math.l2_normalize(tf.stop_gradient(tf.cast(emb, tf.float32)), axis=1)
        rows, group = tf.unique(labels)
        count = tf.shape(rows)[0]
        similarity = tf.reduce_sum(unit * tf.gather(memory, labels), axis=1)
        lowest = tf.math.unsorted_segment_min(similarity, group, count)
        # The first crop of each group whose similarity is the group's lowest.
        position = tf.range(tf.shape(labels)[0])
        candidates = tf.where(similarity <= tf.gather(lowest, group), position,
                              tf.shape(labels)[0])
        # Embeddings that are NaN (weights that diverged) match no crop; the
        # first crop stands in, so that the step ends and its NaN loss stops
        # training with a message instead of an out-of-range gather.
        hardest = tf.minimum(tf.math.unsorted_segment_min(candidates, group, count),
                             tf.shape(labels)[0] - 1)
        moved = momentum * tf.gather(memory, rows) + (1.0 - momentum) * tf.gather(unit, hardest)
        return rows, tf.math.l2_normalize(moved, axis=1)


def camera_loss(emb, memory, proxies, proxy_cluster, proxy_camera, temperature, inter_weight,
                negatives):
    """The camera-aware proxy loss of CAP (Wang et al. 2021): the memory
    holds one centroid per pseudo-identity and camera (a proxy). Its
    intra-camera term is a softmax over the proxies of the crop's own camera
    against its own proxy, so that a person seen by another camera, whom the
    clustering put apart, is no negative; its inter-camera term pulls the crop
    towards every proxy of its pseudo-identity, in any camera, against them and
    the `negatives` most similar proxies of other pseudo-identities.

    Args:
        emb: (B, D) embeddings.
        memory: (Q, D) unit-length proxies.
        proxies: (B,) int proxy of each crop, in [0, Q).
        proxy_cluster, proxy_camera: (Q,) int pseudo-identity and camera of
            each proxy.
        temperature (float): divides the similarities.
        inter_weight (float): weight of the inter-camera term.
        negatives (int): the hardest negative proxies of the inter-camera term.

    Returns:
        (B,) per-image losses.
    """
    with tf.name_scope('camera_loss'):
        unit = tf.math.l2_normalize(tf.cast(emb, tf.float32), axis=1)
        logits = tf.matmul(unit, tf.stop_gradient(memory), transpose_b=True) / temperature
        # A large negative rather than -inf, whose products make NaNs.
        shut = tf.fill(tf.shape(logits), -1e9)
        same_camera = tf.equal(tf.gather(proxy_camera, proxies)[:, None], proxy_camera[None, :])
        intra = tf.nn.sparse_softmax_cross_entropy_with_logits(
            proxies, tf.where(same_camera, logits, shut))
        positive = tf.equal(tf.gather(proxy_cluster, proxies)[:, None], proxy_cluster[None, :])
        hardest = tf.math.top_k(tf.where(positive, shut, logits),
                                tf.minimum(negatives, tf.shape(memory)[0])).values
        normaliser = tf.reduce_logsumexp(
            tf.concat([tf.where(positive, logits, shut), hardest], axis=1), axis=1)
        positives = tf.cast(positive, tf.float32)
        inter = -tf.reduce_sum(positives * (logits - normaliser[:, None]), axis=1) / \
            tf.reduce_sum(positives, axis=1)
        return intra + inter_weight * inter
