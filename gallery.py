"""A gallery of embeddings to search: loading one that embed.py wrote, with
the test-time augmentation that made it, and ranking it for queries.

search.py is its command line; the benchmarks time it. Large galleries are
searched through an approximate nearest-neighbour index (faiss's HNSW graph),
built once and saved beside the gallery.
"""

import hashlib
import os
import sys

import h5py
import numpy as np

import cli
import files
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
        raise cli.UserError('`{}` holds no file names (`fids`); it was written by an older '
                            'embed.py. Embed the gallery again.'.format(path))
    embs, fids, names, aggregator, origin = (stored.emb, stored.fids, stored.names,
                                             stored.aggregator, stored.origin)
    if embs.ndim != 2 or len(embs) != len(fids) or not len(embs):
        raise cli.UserError('`{}` holds {} embeddings of shape {} for {} file names; embed the '
                            'gallery again.'.format(path, len(embs), embs.shape, len(fids)))
    augmentation = test_time_augmentation(names, aggregator if isinstance(aggregator, str) and
                                          aggregator in AGGREGATORS else None)
    if augmentation is None:
        raise cli.UserError('`{}` names test-time augmentations that embed.py does not make '
                            '({}); embed the gallery again with embed.py.'.format(
                                   path, ', '.join(names[:5])))
    embeddings_file.check_finite(embs, 'the gallery `{}`'.format(path), 'embed the gallery again '
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


# The approximate index: faiss's HNSW graph, with as many links per node and
# as long a candidate list while building as bench/ann.py measured (it
# chose faiss-cpu over hnswlib: as fast and as exact, and a wheel where
# hnswlib compiles). The index of a metric searches its own space: unit
# vectors for cosine, whose Euclidean order is the cosine order.
INDEX_LINKS = 32
INDEX_BUILD_CANDIDATES = 100
INDEX_SPACES = {'euclidean': 'l2', 'sqeuclidean': 'l2', 'cosine': 'cosine', 'cityblock': 'l1'}


def index_path(gallery_path, metric):
    """Where the index of `gallery_path` for `metric` is saved, beside it."""
    return '{}.{}.index'.format(gallery_path, INDEX_SPACES[metric])


def _index_vectors(embs, metric):
    """The (G, D) float32 vectors the index of `metric` holds."""
    embs = np.ascontiguousarray(embs, dtype=np.float32)
    if INDEX_SPACES[metric] == 'cosine':
        embs = embs / np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
    return embs


def build_index(embs, metric, progress=None, chunk=20_000):
    """A faiss HNSW index of the gallery embeddings (G, D) for `metric`,
    added `chunk` vectors at a time so that `progress`, when given, hears
    (done, G) after each."""
    import faiss
    vectors = _index_vectors(embs, metric)
    index = faiss.IndexHNSWFlat(vectors.shape[1], INDEX_LINKS, faiss.METRIC_L1 if INDEX_SPACES[
        metric] == 'l1' else faiss.METRIC_L2)
    index.hnsw.efConstruction = INDEX_BUILD_CANDIDATES
    for start in range(0, len(vectors), chunk):
        index.add(vectors[start:start + chunk])
        if progress is not None:
            progress(min(start + chunk, len(vectors)), len(vectors))
    return index


def _read_index(path, digest):
    """The index saved at `path` when it was built from the gallery whose
    embeddings hash to `digest`, else None (with a warning for a damaged or
    stale file, which is then built anew)."""
    import faiss
    # A folder in the index's place is reported when the index cannot be saved there.
    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, 'r') as f:
            if f.attrs.get('gallery_sha256') != digest:
                print('The index `{}` was built from other embeddings than the gallery\'s; '
                      'building it anew.'.format(path), file=sys.stderr)
                return None
            return faiss.deserialize_index(f['faiss'][()])
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        print('WARNING: the index `{}` is damaged ({}); building it anew.'.format(
            path, str(e).splitlines()[0][:200]), file=sys.stderr)
        return None


def load_or_build_index(embs, metric, gallery_path, progress=None):
    """The HNSW index of the gallery `embs` (G, D) for `metric`: the one saved
    beside `gallery_path` when it holds these embeddings (their SHA-256 is
    stored with it), else a new one, saved there for the next search (through
    a temporary file, so a search stopped while saving leaves no half index;
    a folder that cannot be written only costs the next search the build).
    `progress` is passed to `build_index`."""
    import faiss
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(embs))).hexdigest()
    path = index_path(gallery_path, metric)
    index = _read_index(path, digest)
    if index is not None:
        return index
    print('Building the gallery index of {} embeddings; this happens once, and takes about '
          'a quarter of an hour for a million on 2 cores (bench/results/ann.json).'.format(
              len(embs)), file=sys.stderr)
    index = build_index(embs, metric, progress)
    try:
        with files.output(path, suffix='.h5') as partial, h5py.File(partial, 'w') as f:
            f.create_dataset('faiss', data=faiss.serialize_index(index))
            f.attrs['gallery_sha256'] = digest
            f.attrs['metric_space'] = INDEX_SPACES[metric]
    except (OSError, cli.UserError) as e:
        print('WARNING: cannot save the gallery index `{}` ({}); the next search builds it '
              'again.'.format(path, e), file=sys.stderr)
    return index


def search_index(index, query_embs, gallery_embs, metric, top_k, candidates):
    """The approximate top-k gallery indices (Q, k) of each query, nearest
    first, and their exact `metric` distances (Q, k), through `index` with
    a candidate list of `candidates` (HNSW's efSearch)."""
    # More candidates than gallery images cannot help (and faiss takes a C int).
    index.hnsw.efSearch = min(max(candidates, top_k), index.ntotal)
    k = min(top_k, index.ntotal)
    _, nearest = index.search(_index_vectors(query_embs, metric), k)
    distances = np.stack([metrics.pairwise_distances(q[None], gallery_embs[n], metric)[0]
                          for q, n in zip(query_embs, np.maximum(nearest, 0))])
    # A graph search can come back with empty slots (-1); those rare queries
    # are searched exactly, so that every row holds k gallery images.
    short = (nearest < 0).any(axis=1)
    if short.any():
        nearest[short], distances[short], _ = rank(query_embs[short], gallery_embs, metric, k)
    order = np.argsort(distances, axis=1, kind='stable')
    return np.take_along_axis(nearest, order, 1), np.take_along_axis(distances, order, 1)
