"""Validation during training: embed held-out query and gallery sets, evaluate.

train.py's --val_query, --val_gallery and --val_excluder; the best score so
far is recorded in the experiment root's best.json.
"""

import logging

import numpy as np

import common
from inputs import embeddings_file
import excluders
from evaluation import metrics
from cli.flags import MAX_IMAGE_PIXELS
from inputs.images import decodable_mask, image_batches

log = logging.getLogger(__name__)


def make_validation(query_csv, gallery_csv, image_root, excluder, preprocessing,
                    metric='euclidean', camera_regex=None, loading_threads=8,
                    max_pixels=MAX_IMAGE_PIXELS):
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
    alone; so validating changes nothing about the training.
    """
    q_pids, q_fids = common.load_dataset(query_csv, image_root)
    g_pids, g_fids = common.load_dataset(gallery_csv, image_root)
    if excluder == 'folders' and camera_regex is None:
        log.warning('Without --val_camera_regex, the validation excluder `folders` ignores only '
                    'each query\'s own image, as `diagonal` does.')
    mask = excluders.load(excluder, q_fids, g_fids, camera_regex,
                          ('--val_excluder', '--val_camera_regex'))
    fids = np.concatenate([q_fids, g_fids])
    decodable_mask(fids, image_root, False, loading_threads,
                   remedy='or drop their rows from the validation CSVs', max_pixels=max_pixels)
    batches = image_batches(fids, image_root, preprocessing, loading_threads=loading_threads)

    def validate(forward):
        embs = np.concatenate([forward(images).numpy() for images in batches]).astype(np.float32)
        embeddings_file.check_finite(embs, 'validation\'s embeddings of `{}` and `{}`'.format(
            query_csv, gallery_csv), 'the network\'s weights are broken; lower '
            '--learning_rate and resume from an earlier checkpoint', fids)
        result = metrics.evaluate(q_pids, q_fids, g_pids, metrics.metric_distances(
            embs[:len(q_fids)], embs[len(q_fids):], metric), mask)
        cmc = result['CMC']
        return {'mAP': result['mAP'], 'top1': metrics.cmc_at(cmc, 1),
                'top5': metrics.cmc_at(cmc, 5)}
    return validate


