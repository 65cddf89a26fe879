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
        hardest = tf.math.unsorted_segment_min(candidates, group, count)
        moved = momentum * tf.gather(memory, rows) + (1.0 - momentum) * tf.gather(unit, hardest)
        return rows, tf.math.l2_normalize(moved, axis=1)
