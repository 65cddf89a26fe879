"""The collapse watch of training: when a run's loss sits at its value for
equal distances and its batches show no identities, train.py warns with
the remedies (and stops, with --stop_on_collapse).
"""

import loss


# Collapse: the loss within COLLAPSE_BAND (relative, or absolute for a zero
# collapse value) of `loss.collapse_value`, and no identity structure in the
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
    `loss.embedding_spread`, its batch top-k precision and that precision's
    chance level ((K - 1) / (P·K - 1) for P×K batches)."""
    value = loss.collapse_value(margin)
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
                iterations, loss.collapse_value(margin), COLLAPSE_SPREAD, COLLAPSE_CHANCE))
