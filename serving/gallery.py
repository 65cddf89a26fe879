"""A gallery of embeddings to search: loading one that embed.py wrote, with
the test-time augmentation that made it, and ranking it for queries.

search.py is its command line; the benchmarks time it. Large galleries are
searched through an approximate nearest-neighbour index (faiss's HNSW graph),
built once and saved beside the gallery.
"""

import collections
import hashlib
import os
import sys

import h5py
import numpy as np

from triplet_reid import cli
from triplet_reid.cli import patterns
from triplet_reid.storage import files, locks
from triplet_reid.inputs import embeddings_file
from triplet_reid.evaluation import metrics
from triplet_reid.aggregators import AGGREGATORS


def test_time_augmentation(names, aggregator):
    """embed.py's (flip, crop, aggregator) from a file's `augmentation_types`
    (such as `original_flip_top_left`) and `aggregator` attribute, or None
    when the names are not embed.py's."""
    # TensorFlow's image code only here, so that changing a gallery starts at once.
    from triplet_reid.inputs import images
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
    (flip, crop, aggregator) that made it, its origin (see
    `embeddings_file`), and its rows' footage fields ({} for images))."""
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
    return embs, fids, augmentation, origin, stored.fields


def rank(query_embs, gallery_embs, metric, top_k, rerank_them=False):
    """The top-k gallery indices (Q, k) of each query, nearest first, their
    distances (Q, k), and their plain `metric` distances (Q, k), which differ
    from the former when re-ranked."""
    plain = metrics.pairwise_distances(query_embs, gallery_embs, metric)
    if rerank_them:
        from triplet_reid.evaluation import rerank
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
            return faiss.deserialize_index(files.stored_values(f['faiss'], path))
    except (OSError, KeyError, RuntimeError, ValueError, cli.UserError) as e:
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
    digest = embeddings_digest(embs)
    # Beside the gallery itself, where append and remove keep the index,
    # also for a gallery named through a link.
    path = index_path(os.path.realpath(gallery_path), metric)
    index = _read_index(path, digest)
    if index is not None:
        return index
    print('Building the gallery index of {} embeddings; this happens once, and takes about '
          'a quarter of an hour for a million on 2 cores (bench/results/ann.json).'.format(
              len(embs)), file=sys.stderr)
    index = build_index(embs, metric, progress)
    save_index(path, index, digest, INDEX_SPACES[metric])
    return index


def embeddings_digest(embs):
    """The SHA-256 of the gallery embeddings (G, D) that an index belongs to."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(embs, np.float32))).hexdigest()


def save_index(path, index, digest, space):
    """Saves the faiss `index` of the gallery embeddings hashed to `digest`
    at `path`, whole or not at all; a folder that cannot be written only
    costs the next search the build (a warning says so). A link in the
    index's place is left alone: the user did not name that path, and
    `files.output` would write through it to whatever it points to."""
    import faiss
    if os.path.islink(path):
        print('WARNING: `{}` stands where the gallery index is saved, but it is a link; the index '
              'is not saved, and the next search builds it again. Remove the link to keep the '
              'index.'.format(path), file=sys.stderr)
        return
    try:
        with files.output(path, suffix='.h5') as partial, h5py.File(partial, 'w') as f:
            f.create_dataset('faiss', data=faiss.serialize_index(index))
            f.attrs['gallery_sha256'] = digest
            f.attrs['metric_space'] = space
    except (OSError, cli.UserError) as e:
        print('WARNING: cannot save the gallery index `{}` ({}); the next search builds it '
              'again.'.format(path, e), file=sys.stderr)


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


# A gallery that grows: rows appended to the gallery file and to the indexes
# saved beside it, without rebuilding them; rows removed by file name.
###

# A metric of each index space, for the vectors the index holds.
SPACE_METRICS = {'l2': 'euclidean', 'cosine': 'cosine', 'l1': 'cityblock'}


def locked(gallery_path):
    """Holds the lock of the gallery `gallery_path` (`files.locked`)."""
    return locks.locked(gallery_path, 'the gallery')


def read_rows(path, what):
    """The `Embeddings` of a gallery file, and its augmented embeddings
    (A, N, D) or None, refusing a file without file names."""
    stored = embeddings_file.read(path, what)
    if stored.fids is None or stored.emb.ndim != 2 or len(stored.fids) != len(stored.emb):
        raise cli.UserError('{} `{}` holds no file names for its embeddings (an older '
                            'embed.py?); embed it again.'.format(what.capitalize(), path))
    return stored, embeddings_file.read_augmented(path)


def check_appendable(gallery, new, gallery_path, new_path):
    """Refuses to append the `Embeddings` `new` to `gallery`: another
    network or checkpoint, other dimensions, other test-time augmentation,
    or images the gallery holds already."""
    difference = embeddings_file.origin_difference(gallery.origin, new.origin)
    if difference or bool(gallery.origin) != bool(new.origin):
        raise cli.UserError('`{}` and the gallery `{}` come from {}; their distances mean '
                            'nothing together. Embed the new images with the gallery\'s '
                            'experiment and checkpoint. Nothing was changed.'.format(
                                new_path, gallery_path, difference or
                                'files of which only one names its network'))
    if new.emb.shape[1] != gallery.emb.shape[1]:
        raise cli.UserError('`{}` holds {}-dimensional embeddings and the gallery `{}` {}; '
                            'nothing was changed.'.format(new_path, new.emb.shape[1],
                                                          gallery_path, gallery.emb.shape[1]))
    if list(new.names) != list(gallery.names) or new.aggregator != gallery.aggregator:
        raise cli.UserError('`{}` was embedded with other test-time augmentations ({}) than '
                            'the gallery `{}` ({}); embed it with the same --flip_augment, '
                            '--crop_augment and --aggregator. Nothing was changed.'.format(
                                new_path, ', '.join(new.names), gallery_path,
                                ', '.join(gallery.names)))
    if set(new.fields) != set(gallery.fields):
        raise cli.UserError('`{}` holds the fields {} for its rows and the gallery `{}` {}; '
                            'append embeddings of the same kind (footage or images). Nothing '
                            'was changed.'.format(new_path, sorted(new.fields) or 'none',
                                                  gallery_path, sorted(gallery.fields) or
                                                  'none'))
    shared = sorted(set(gallery.fids) & set(new.fids)) or sorted(
        fid for fid, count in collections.Counter(new.fids).items() if count > 1)
    if shared:
        raise cli.UserError('`{}` holds {} image(s) that the gallery `{}` holds already or '
                            'that it lists twice, for example `{}`; leave them out. Nothing '
                            'was changed.'.format(new_path, len(shared), gallery_path,
                                                  shared[0]))


def append(gallery_path, new_path):
    """Appends the embeddings file `new_path` (embed.py's, of the gallery's
    experiment and checkpoint) to the gallery `gallery_path` and to each
    index saved beside it that holds the gallery as it was, adding the new
    vectors to the HNSW graph instead of building it anew. The gallery is
    replaced whole; a kill leaves the old one, and an index whose gallery
    digest does not match is rebuilt by the next search. A gallery behind
    a link is changed where the link points.

    Returns:
        (rows appended, rows in the gallery now, the indexes updated).

    Raises:
        UserError for files that do not fit together (see `check_appendable`).
    """
    target = real_gallery(gallery_path)
    with locked(target):
        gallery, gallery_aug = read_rows(target, 'the gallery')
        new, new_aug = read_rows(new_path, 'the embeddings to append')
        check_appendable(gallery, new, gallery_path, new_path)
        embeddings_file.check_finite(new.emb, '`{}`'.format(new_path), 'embed them again with '
                                     'a checkpoint from before training diverged', new.fids)
        embs = np.concatenate([gallery.emb, new.emb])
        both = gallery_aug is not None and new_aug is not None and \
            gallery_aug.shape[0] == new_aug.shape[0]
        augmented = np.concatenate([gallery_aug, new_aug], axis=1) if both else None
        updated = add_to_indexes(target, gallery.emb, new.emb, embs)
        embeddings_file.write(target, embs, augmented, gallery.names,
                              list(gallery.fids) + list(new.fids), gallery.aggregator,
                              gallery.origin or None, {
                                  key: np.concatenate([value, new.fields[key]])
                                  for key, value in gallery.fields.items()})
    return len(new.emb), len(embs), updated


def add_to_indexes(gallery_path, old_embs, new_embs, embs):
    """Adds `new_embs` to each index saved beside `gallery_path` that was
    built from `old_embs`, saving it for the gallery `embs`; returns their
    paths. A stale or damaged index is left for the next search to rebuild."""
    old_digest, digest, updated = embeddings_digest(old_embs), embeddings_digest(embs), []
    for space, metric in SPACE_METRICS.items():
        path = index_path(gallery_path, metric)
        index = _read_index(path, old_digest) if os.path.isfile(path) else None
        if index is None:
            continue
        index.add(_index_vectors(new_embs, metric))
        save_index(path, index, digest, space)
        updated.append(path)
    return updated


def check_saved_index(path):
    """Refuses `path` unless it is an index file that `save_index` wrote: a
    regular file (no link, no folder) holding a faiss index and the digest of
    its gallery. --remove deletes the saved indexes, and never what a user
    keeps under such a name."""
    refused = cli.UserError(
        '`{}` stands where --remove would delete the gallery\'s saved index, but it is not an '
        'index file that search.py wrote; move it away (or delete it, if it is a damaged index) '
        'and run --remove again. Nothing was changed.'.format(path))
    if os.path.islink(path) or not os.path.isfile(path):
        raise refused
    try:
        with h5py.File(path, 'r') as f:
            if 'gallery_sha256' not in f.attrs or 'faiss' not in f:
                raise refused
    except OSError:
        raise refused


def remove(gallery_path, pattern):
    """Removes the gallery rows whose file name matches the regular
    expression `pattern` (searched anywhere in the name, such as a camera's
    folder). faiss's HNSW graph cannot delete, so the indexes saved beside
    the gallery are removed, and the next --index search builds one anew.

    The names are matched before the gallery's lock is taken, so that
    appenders do not wait on the matching; under the lock, only names that
    an appender added meanwhile are matched. A gallery behind a link is
    changed where the link points.

    Returns:
        (rows removed, rows left).

    Raises:
        UserError for a pattern that is not a regular expression, or one that
        would leave the gallery empty.
    """
    expression = patterns.compile(pattern, '--pattern')
    target = real_gallery(gallery_path)
    matched = {}

    def kept(rows):
        for fid in rows.fids:
            if fid not in matched:
                matched[fid] = expression.search(fid) is not None
        return np.array([not matched[fid] for fid in rows.fids], dtype=bool)

    before = file_state(target)
    gallery, augmented = read_rows(target, 'the gallery')
    kept(gallery)
    with locked(target):
        if file_state(target) != before:
            gallery, augmented = read_rows(target, 'the gallery')
        keep = kept(gallery)
        if keep.all():
            return 0, len(keep)
        if not keep.any():
            raise cli.UserError('--remove `{}` matches all {} images of the gallery `{}`, '
                                'which would leave it empty; delete the file instead. Nothing '
                                'was changed.'.format(pattern, len(keep), gallery_path))
        indexes = [index_path(target, metric) for metric in SPACE_METRICS.values()]
        indexes = [path for path in indexes if os.path.lexists(path)]
        for path in indexes:
            check_saved_index(path)
        for path in indexes:
            os.remove(path)
        embeddings_file.write(target, gallery.emb[keep], None if augmented is None
                              else augmented[:, keep], gallery.names,
                              [fid for fid, kept in zip(gallery.fids, keep) if kept],
                              gallery.aggregator, gallery.origin or None,
                              {key: value[keep] for key, value in gallery.fields.items()})
    return int((~keep).sum()), int(keep.sum())


def real_gallery(gallery_path):
    """The file that the gallery `gallery_path` is: the target of a link,
    so that a change replaces the user's gallery rather than the link, and
    takes the same lock as a change that names the target."""
    if not os.path.isfile(gallery_path):
        raise cli.UserError('the gallery `{}` is not a file; give the embeddings file that '
                            'embed.py wrote. Nothing was changed.'.format(gallery_path))
    return os.path.realpath(gallery_path)


def file_state(path):
    """What tells that the file `path` was replaced or changed."""
    state = os.stat(path)
    return state.st_ino, state.st_size, state.st_mtime_ns
