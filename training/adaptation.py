"""Training on pseudo-identities (train.py --pseudo_labels): rounds of
embedding the unlabelled crops with the current model, clustering them
(`pseudo_labels`), and training on the clusters as identities.

A round starts at an iteration that is a multiple of --cluster_every (or
where a run begins). Its pseudo-labels are written to the experiment root's
`pseudo_labels/` folder as `roundR_iterI.csv` (`path,pseudo_identity` rows,
-1 for the crops no cluster took), and the cluster memory's centroids, the
round's number and its first iteration are variables of the checkpoint. So
a resumed run continues its round with the same labels, memory, optimizer
and sampler stream (which `sampler.pk_dataset` positions by the iteration);
one killed while clustering restores the round's first iteration and
clusters the same model again.
"""

import csv
import io
import logging
import os
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.storage import files
from triplet_reid.experiment.adaptation import Adaptation
from triplet_reid.models.inference import embed_files
from triplet_reid.training import pseudo_labels

log = logging.getLogger('train')

FOLDER = 'pseudo_labels'


def labels_path(root, number, start):
    """The pseudo-labels file of round `number`, which began at iteration `start`."""
    return os.path.join(root, FOLDER, 'round{}_iter{}.csv'.format(number, start))


def write_labels(path, fids, labels):
    """Writes the `path,pseudo_identity` CSV of a round, whole or not at all."""
    text = io.StringIO()
    rows = csv.writer(text, lineterminator='\n')
    rows.writerow(['path', 'pseudo_identity'])
    rows.writerows(zip(fids, labels.tolist()))
    files.atomic_write(path, text.getvalue())


def read_labels(path, fids):
    """A round's (N,) int64 pseudo-labels, checked against the crops `fids`.

    Raises:
        UserError when the file is missing, damaged or lists other crops.
    """
    remedy = ('restore it, or start a new experiment root (with --initial_checkpoint on this '
              'one to keep its model)')
    try:
        with open(path, encoding='utf-8') as f:
            table = pd.read_csv(io.StringIO(f.read()), dtype=str, keep_default_na=False)
        labels = table['pseudo_identity'].astype(np.int64).to_numpy()
        same = len(table) == len(fids) and (table['path'].to_numpy(dtype=str) == fids).all()
    except (OSError, UnicodeDecodeError, KeyError, ValueError, pd.errors.ParserError) as e:
        raise cli.UserError('cannot read the pseudo-labels `{}` of the round this experiment '
                            'is in ({}); {}.'.format(path, str(e).splitlines()[0][:200],
                                                     remedy))
    if not same or labels.min(initial=0) < -1:
        raise cli.UserError('the pseudo-labels `{}` list other crops than --train_set holds '
                            'now; {}.'.format(path, remedy))
    return labels


def centroids(embs, labels):
    """The unit-length mean of each pseudo-identity's unit-length embeddings:
    (C, D) for labels 0..C-1 of (N,) `labels` (N, D) `embs`."""
    unit = pseudo_labels.normalized(embs)
    found = labels >= 0
    count = labels.max() + 1
    sums = np.zeros((count, embs.shape[1]), np.float32)
    np.add.at(sums, labels[found], unit[found])
    return pseudo_labels.normalized(sums)


def camera_proxies(labels, cameras):
    """The camera proxies of pseudo-labels (N,) with cameras (N,): ((N,) int
    proxy of each crop, -1 for outliers, (Q,) int32 pseudo-identity and (Q,)
    int32 camera number of each proxy), one proxy per pseudo-identity and
    camera that holds crops of it, ordered by pseudo-identity."""
    camera = pseudo_labels.camera_numbers(cameras)
    cameras_count = camera.max(initial=0) + 1
    found = labels >= 0
    keys, proxy = np.unique(labels[found] * cameras_count + camera[found], return_inverse=True)
    proxies = np.full(len(labels), -1, np.int64)
    proxies[found] = proxy
    return (proxies, (keys // cameras_count).astype(np.int32),
            (keys % cameras_count).astype(np.int32))


def centred_by_camera(embs, cameras):
    """`embs` (N, D) with each camera's mean embedding subtracted, unit length again."""
    unit = pseudo_labels.normalized(embs).copy()
    for camera in np.unique(cameras):
        unit[cameras == camera] -= unit[cameras == camera].mean(axis=0)
    return pseudo_labels.normalized(unit)


def track_constraints(labels, crops):
    """`labels` made to obey the crops' tracks (`pseudo_labels.constrain_by_tracks`);
    without frames, tracks are must-links only."""
    tracks = [None if t in ('', '-1') else t for t in crops.tracks]
    cameras = crops.cameras if crops.cameras is not None else np.full(len(labels), '')
    frames = crops.frames
    if frames is None:
        # Each track alone in a frame of its own: no two overlap.
        _, frames = np.unique(np.array([str(k) for k in zip(cameras, crops.tracks)]),
                              return_inverse=True)
    return pseudo_labels.constrain_by_tracks(labels, tracks, cameras, frames)


def cluster_crops(embs, crops, settings, batch_p):
    """The pseudo-labels (N,) of the crops' embeddings `embs` (N, D), -1 for
    outliers, made with `settings` (an `Adaptation`).

    Raises:
        UserError when the clustering leaves too little to train on, saying
        which parameter to change.
    """
    count = len(embs)
    if count < batch_p * settings.cluster_min_samples:
        raise cli.UserError(
            '{} crops are too few to cluster into the {} pseudo-identities a batch needs '
            '(--batch_p) of at least --cluster_min_samples {} crops each; give more crops, or '
            'lower --batch_p or --cluster_min_samples.'.format(
                count, batch_p, settings.cluster_min_samples))
    if settings.camera_centering:
        embs = centred_by_camera(embs, crops.cameras)
    # DBSCAN takes the neighbours at a distance of at most eps.
    distances = pseudo_labels.jaccard_graph(embs, settings.cluster_k1, settings.cluster_k2,
                                            below=np.nextafter(settings.cluster_eps, 2),
                                            cameras=crops.cameras,
                                            camera_penalty=settings.cluster_camera_penalty)
    labels = pseudo_labels.cluster(distances, settings.cluster_eps,
                                   settings.cluster_min_samples)
    if crops.tracks is not None:
        labels = track_constraints(labels, crops)
    clusters = labels.max() + 1
    now = '(now --cluster_eps {}, --cluster_min_samples {})'.format(
        settings.cluster_eps, settings.cluster_min_samples)
    if clusters == 0:
        raise cli.UserError('every one of the {} crops is an outlier of the clustering {}: no '
                            'crop has enough neighbours close enough. Raise --cluster_eps or '
                            'lower --cluster_min_samples.'.format(count, now))
    if clusters == 1:
        raise cli.UserError('the clustering {} put all {} clustered crops into one '
                            'pseudo-identity; lower --cluster_eps.'.format(
                                now, int((labels >= 0).sum())))
    if clusters < batch_p:
        raise cli.UserError('the clustering {} found {} pseudo-identities, fewer than the {} '
                            'of a batch (--batch_p); lower --batch_p, or change --cluster_eps '
                            'or --cluster_min_samples.'.format(now, clusters, batch_p))
    return labels


def label_summaries(writer, step, number, labels, identities, seconds):
    """The round's clusters in the log and TensorBoard: their number, the
    outliers, their sizes and, when true identities are known (for measuring
    only), the pseudo-labels' pairwise precision and recall and NMI."""
    clusters = int(labels.max() + 1)
    outliers = int((labels < 0).sum())
    sizes = np.bincount(labels[labels >= 0])
    scores = {}
    if identities is not None and len(np.unique(identities)) > 1:
        scores = pseudo_labels.pairwise_scores(labels, identities)
    with writer.as_default(step=step):
        tf.summary.scalar('pseudo_labels/round', number)
        tf.summary.scalar('pseudo_labels/clusters', clusters)
        tf.summary.scalar('pseudo_labels/outliers', outliers / len(labels))
        tf.summary.histogram('pseudo_labels/cluster_sizes', sizes)
        for name, value in scores.items():
            tf.summary.scalar('pseudo_labels/' + name, value)
    writer.flush()
    log.info('round %d at iter %d: %d pseudo-identities of %d to %d crops (median %d), %d of '
             '%d crops outliers (%.1f%%)%s; %.1fs', number, step, clusters, sizes.min(),
             sizes.max(), np.median(sizes), outliers, len(labels), 100 * outliers / len(labels),
             ''.join(', {} {:.1f}%'.format(name, 100 * value) for name, value in scores.items()),
             seconds)


class Rounds:
    """The rounds of one run of train.py --pseudo_labels: `begin(step)` gives
    the pseudo-identities to train on from `step`, continuing the round the
    checkpoint is in or clustering anew; after a new round's labels,
    `commit(writer)` writes them and their summaries, and the caller saves the
    checkpoint, whose memory is the round's."""

    def __init__(self, args, model, extras, crops):
        self.args, self.model, self.extras, self.crops = args, model, extras, crops
        self.settings = Adaptation.of(args)
        self.labels, self.fresh, self.seconds = None, False, 0.0

    @property
    def start(self):
        """The first iteration of the current round, -1 before the first."""
        return int(self.extras['round_start'].numpy())

    def starts_at(self, step):
        """Whether a new round begins at iteration `step`."""
        return step % self.settings.cluster_every == 0 and step != self.start

    def begin(self, step):
        """The round that training from iteration `step` is in.

        Returns:
            {'pids': (M,) zero-padded pseudo-identities, 'fids': (M,),
            'labels': None or, with --camera_proxies, their (M,) proxies} of
            the M crops that a cluster took, for the P×K sampler, whose
            labels then number the rows of the cluster memory.
        """
        start, number = self.start, int(self.extras['round'].numpy())
        fids = self.crops.fids
        if start >= 0 and not self.starts_at(step):
            path = labels_path(self.args.experiment_root, number, start)
            # Killed after the round's checkpoint but before its labels were
            # written, the same model clusters the same crops again below.
            if os.path.exists(path) or step != start:
                self.labels, self.fresh = read_labels(path, fids), False
                return self.training_data(self.memory_rows())
        else:
            number += 1
        began = time.time()
        log.info('Round %d: embedding the %d training crops with the model of iteration %d.',
                 number, len(fids), step)
        embs = embed_files(self.model, vars(self.args), fids, self.crops.image_root,
                           loading_threads=self.args.loading_threads)[0]
        if not np.isfinite(embs).all():
            raise cli.UserError('the model of iteration {} embeds some training crops as NaN or '
                                'infinity; its weights are broken. Resume from an earlier '
                                'checkpoint with a lower --learning_rate.'.format(step))
        self.labels = cluster_crops(embs, self.crops, self.settings, self.args.batch_p)
        rows = self.memory_rows()
        self.extras['memory'].assign(centroids(embs, rows))
        self.extras['round_start'].assign(step)
        self.extras['round'].assign(number)
        self.fresh, self.seconds = True, time.time() - began
        return self.training_data(rows)

    def memory_rows(self):
        """(N,) each crop's row of the cluster memory, -1 for outliers: its
        pseudo-identity or, with --camera_proxies, its proxy, whose tables of
        pseudo-identity and camera this sets in `extras`."""
        if 'proxy_cluster' not in self.extras:
            return self.labels
        proxies, cluster, camera = camera_proxies(self.labels, self.crops.cameras)
        self.extras['proxy_cluster'].assign(cluster)
        self.extras['proxy_camera'].assign(camera)
        return proxies

    def training_data(self, rows):
        """The pseudo-identities of the clustered crops, whose memory rows
        are `rows` (`memory_rows`); see `begin`."""
        keep = self.labels >= 0
        width = len(str(self.labels.max()))
        return {'pids': np.char.zfill(self.labels[keep].astype(str), width),
                'fids': self.crops.fids[keep],
                'labels': rows[keep] if 'proxy_cluster' in self.extras else None}

    def commit(self, writer):
        """Writes the new round's labels and its summaries."""
        number, start = int(self.extras['round'].numpy()), self.start
        write_labels(labels_path(self.args.experiment_root, number, start), self.crops.fids,
                     self.labels)
        label_summaries(writer, start, number, self.labels, self.crops.identities,
                        self.seconds)
        self.fresh = False
