"""Ways to combine the embeddings of the test-time augmentations of one image.

Each aggregator maps an (A, N, D) array of A augmented embeddings of N images
to an (N, D) array.
"""

import numpy as np


def mean(embs):
    """The average over augmentations: (A, N, D) -> (N, D)."""
    return np.mean(embs, axis=0)


def normalized_mean(embs):
    """The average over augmentations, scaled to unit L2 norm: (A, N, D) -> (N, D)."""
    embs = mean(embs)
    return embs / np.linalg.norm(embs, axis=1, keepdims=True)


AGGREGATORS = {
    'mean': mean,
    'normalized_mean': normalized_mean,
}
