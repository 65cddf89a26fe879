"""The collapse watch of training: when a run's loss sits at its value for
equal distances and its batches show no identities, train.py warns with
the remedies. Also the measures it watches, which the step computes.
"""

import numbers

import tensorflow as tf

from triplet_reid.loss import cdist


# Collapse: the loss within COLLAPSE_BAND (relative, or absolute for a zero
# collapse value) of `collapse_value`, and no identity structure in the
# batch: the embedding spread below COLLAPSE_SPREAD (all points in one), or
# the batch top-k precision at most COLLAPSE_CHANCE times its chance level
# (points spread out at random, as a net that learns nothing gives them). A
# healthy run leaves the collapse value within tens of iterations, keeps a
# spread above 0.3, and soon ranks above chance.
COLLAPSE_BAND = 0.1
COLLAPSE_SPREAD = 0.1
COLLAPSE_CHANCE = 2


def looks_collapsed(mean_loss, spread, margin, precision=1.0, chance=0.0):
    """Whether one step looks collapsed, from its mean loss, its
    `embedding_spread`, its batch top-k precision and that precision's
    chance level ((K - 1) / (P·K - 1) for P×K batches)."""
    value = collapse_value(margin)
    tolerance = COLLAPSE_BAND * (value if value > 0 else 1.0)
    return abs(mean_loss - value) <= tolerance and (
        spread < COLLAPSE_SPREAD or precision <= COLLAPSE_CHANCE * chance)


def collapse_warning(iterations, margin):
    return ('Training looks collapsed: for {} iterations the loss has stayed at {:.3f}, its '
            'value when all distances are equal, and the batches show no identities: the '
            'embeddings lie within {:.0%} of their distance from the origin of each other '
            '(TensorBoard: embedding_spread), or rank the same identity first no better than '
            '{} times chance (batch_prec_at_k). Such a run rarely recovers. Remedies: an '
            'identity loss (--id_loss_weight 1, best with --head_name bnneck), a lower '
            '--learning_rate, a pretrained body (--initial_checkpoint), a smaller net, or '
            'another --loss or --margin; see "When training collapses" in docs/training.md.'.format(
                iterations, collapse_value(margin), COLLAPSE_SPREAD, COLLAPSE_CHANCE))


def collapse_value(margin):
    """The loss of a collapsed embedding, where every distance is equal: `apply_margin(0)`,
    ln 2 for the soft margin, the margin for a hinge and 0 without one."""
    if isinstance(margin, numbers.Real):
        return float(max(margin, 0.0))
    return float(tf.nn.softplus(0.0)) if margin == 'soft' else 0.0


def embedding_spread(dists, pair_mask, emb, metric='euclidean'):
    """How far apart the embeddings lie, relative to how far they lie from the origin.

    The mean distance between the pairs of `pair_mask` over the mean distance
    of the embeddings from the origin (at least 1e-3), both in `metric`: about
    1.4 for random Euclidean embeddings, near zero when training collapsed
    them to one point.

    Args:
        dists: (A, B) distances.
        pair_mask: (A, B) booleans, the pairs to average (such as all
            positive and negative pairs, that is, all but the anchors themselves).
        emb: (B, F) embeddings.
        metric (str): The metric of `dists`, see `cdist`.

    Returns:
        A scalar.
    """
    mask = tf.cast(pair_mask, dists.dtype)
    pairs = tf.reduce_sum(dists * mask) / tf.maximum(tf.reduce_sum(mask), 1)
    if metric == 'cosine':
        # Cosine distances ignore the lengths; they are already relative.
        return pairs
    lengths = tf.reduce_mean(cdist(emb, tf.zeros_like(emb[:1]), metric))
    # The floor keeps a collapse onto the origin itself (where batch norm puts
    # identical inputs) near zero; trained embeddings are far longer.
    return pairs / tf.maximum(lengths, tf.constant(1e-3, lengths.dtype))
