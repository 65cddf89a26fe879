"""Validation during training: embed held-out query and gallery sets, evaluate.

train.py's --val_query, --val_gallery and --val_excluder; the best score so
far is recorded in the experiment root's best.json.
"""

import logging

import numpy as np

from triplet_reid import common
from triplet_reid.cli import UserError
from triplet_reid.inputs import embeddings_file, tracklets
from triplet_reid.models import video
from triplet_reid import excluders
from triplet_reid.evaluation import metrics
from triplet_reid.cli.flags import MAX_IMAGE_PIXELS
from triplet_reid.inputs.cameras import embedding_cameras
from triplet_reid.inputs.images import decodable_mask, image_batches
from triplet_reid.models.inference import batch_outputs

log = logging.getLogger(__name__)


def validation_set(csv_file, image_root):
    """(pids, names, `tracklets.Tracklets` or None) of a validation CSV: its
    images, or its tracklets."""
    if tracklets.is_tracklet_csv(csv_file):
        found = tracklets.read_tracklets(csv_file, image_root)
        return found.identities, found.names, found
    pids, fids = common.load_dataset(csv_file, image_root)
    return pids, fids, None


def make_validation(query_csv, gallery_csv, image_root, excluder, preprocessing,
                    metric='euclidean', camera_regex=None, loading_threads=8,
                    max_pixels=MAX_IMAGE_PIXELS, sie=None):
    """The validation on the query and gallery CSVs (train.py's --val_query,
    --val_gallery), evaluated with the excluder `excluder` (and, for
    `folders`, `camera_regex`) and `metric`; `preprocessing` is the
    experiment's `images.Preprocessing`.

    Loads and checks the CSVs, images and excluder now, so that a mistake
    stops the run before anything is written. The returned
    `validate(forward)` embeds both sets with `forward` (the model's
    `inference.inference_function`) and gives {'mAP', 'top1', 'top5'}. The forward pass
    runs in inference mode, which leaves the batch-norm statistics alone, and
    draws no random numbers, while the training batches depend on the step
    alone; so validating changes nothing about the training. `sie`, for a
    model with a camera embedding, is (camera regex, table of cameras): the
    images are embedded with their cameras.
    """
    q_pids, q_fids, q_frames = validation_set(query_csv, image_root)
    g_pids, g_fids, g_frames = validation_set(gallery_csv, image_root)
    if (q_frames is None) != (g_frames is None):
        raise UserError('--val_query and --val_gallery must both list images or both '
                        'tracklets.')
    if excluder == 'folders' and camera_regex is None:
        log.warning('Without --val_camera_regex, the validation excluder `folders` ignores only '
                    'each query\'s own image, as `diagonal` does.')
    mask = excluders.load(excluder, q_fids, g_fids, camera_regex,
                          ('--val_excluder', '--val_camera_regex'))
    names = np.concatenate([q_fids, g_fids])
    frames = names if q_frames is None else np.concatenate([q_frames.fids, g_frames.fids])
    decodable_mask(frames, image_root, False, loading_threads,
                   remedy='or drop their rows from the validation CSVs', max_pixels=max_pixels)
    batches = image_batches(frames, image_root, preprocessing, loading_threads=loading_threads)
    cameras = None if sie is None else embedding_cameras(
        frames, *sie, warn=log.warning, source='the validation images')

    def validate(forward, combine=None):
        outputs = batch_outputs(forward, batches, cameras)
        if q_frames is None and combine is None:
            embs = np.concatenate(list(outputs)).astype(np.float32)
        else:
            # An image is a tracklet of one frame to a model of tracklets, and
            # a model of images averages a tracklet's frames.
            bounds = np.arange(len(frames) + 1) if q_frames is None else np.concatenate(
                [q_frames.bounds, g_frames.bounds[1:] + q_frames.bounds[-1]])
            embs = video.embed_tracklets(outputs, bounds, combine or (lambda rows: rows.mean(0)))
        embeddings_file.check_finite(embs, 'validation\'s embeddings of `{}` and `{}`'.format(
            query_csv, gallery_csv), 'the network\'s weights are broken; lower '
            '--learning_rate and resume from an earlier checkpoint', names)
        result = metrics.evaluate(q_pids, q_fids, g_pids, metrics.metric_distances(
            embs[:len(q_fids)], embs[len(q_fids):], metric), mask)
        cmc = result['CMC']
        return {'mAP': result['mAP'], 'top1': metrics.cmc_at(cmc, 1),
                'top5': metrics.cmc_at(cmc, 5)}
    return validate


