"""A gallery of embeddings to search: loading one that embed.py wrote, with
the test-time augmentation that made it, and ranking it for queries.

search.py is its command line; the benchmarks time it.
"""

import numpy as np

import common
import embeddings_file
import metrics
import images
from aggregators import AGGREGATORS


def test_time_augmentation(names, aggregator):
    """embed.py's (flip, crop, aggregator) from a file's `augmentation_types`
    (such as `original_flip_top_left`) and `aggregator` attribute, or None
    when the names are not embed.py's."""
    flip = any(n.startswith('original_flip_') for n in names)
    crops = {n[len('original_flip_'):] if n.startswith('original_flip_') else
             n[len('original_'):] for n in names}
    if crops == set(images.CROPS):
        crop = 'five'
    elif len(crops) == 1 and crops <= {'resize', 'center', 'avgpool'}:
        crop = None if crops == {'resize'} else crops.pop()
    else:
        return None
    if images.augmentation_names(flip, crop) != list(names):
        return None
    # Files from before the attribute was written: the original's aggregator.
    return flip, crop, (aggregator or 'mean') if len(names) > 1 else None


def load_gallery(path):
    """The gallery's (embeddings (G, D) float32, file names (G,), embed.py's
    (flip, crop, aggregator) that made it, and its origin (see
    `embeddings_file`))."""
    stored = embeddings_file.read(path, 'the gallery')
    if stored.fids is None:
        raise common.UserError('`{}` holds no file names (`fids`); it was written by an older '
                               'embed.py. Embed the gallery again.'.format(path))
    embs, fids, names, aggregator, origin = (stored.emb, stored.fids, stored.names,
                                             stored.aggregator, stored.origin)
    if embs.ndim != 2 or len(embs) != len(fids) or not len(embs):
        raise common.UserError('`{}` holds {} embeddings of shape {} for {} file names; embed the '
                               'gallery again.'.format(path, len(embs), embs.shape, len(fids)))
    augmentation = test_time_augmentation(names, aggregator if isinstance(aggregator, str) and
                                          aggregator in AGGREGATORS else None)
    if augmentation is None:
        raise common.UserError('`{}` names test-time augmentations that embed.py does not make '
                               '({}); embed the gallery again with embed.py.'.format(
                                   path, ', '.join(names[:5])))
    common.check_finite(embs, 'the gallery `{}`'.format(path), 'embed the gallery again '
                        'with a checkpoint from before training diverged', fids)
    return embs, fids, augmentation, origin


def rank(query_embs, gallery_embs, metric, top_k, rerank_them=False):
    """The top-k gallery indices (Q, k) of each query, nearest first, their
    distances (Q, k), and their plain `metric` distances (Q, k), which differ
    from the former when re-ranked."""
    plain = metrics.pairwise_distances(query_embs, gallery_embs, metric)
    if rerank_them:
        import rerank
        distances = rerank.reranker(query_embs, gallery_embs, metric)(
            np.arange(len(query_embs)))
    else:
        distances = plain
    k = min(top_k, distances.shape[1])
    nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distances, nearest, 1), axis=1, kind='stable')
    nearest = np.take_along_axis(nearest, order, 1)
    return (nearest, np.take_along_axis(distances, nearest, 1),
            np.take_along_axis(plain, nearest, 1))
