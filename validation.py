"""Validation during training: embed held-out query and gallery sets, evaluate.

train.py's --val_query, --val_gallery and --val_excluder; the best score so
far is recorded in the experiment root's best.json.
"""

import logging

import numpy as np

import common
import excluders
import metrics
from images import decodable_mask, image_batches

log = logging.getLogger(__name__)


def make_validation(args):
    """The validation of --val_query/--val_gallery, or None without them.

    Loads and checks the CSVs, images and excluder now, so that a mistake
    stops the run before anything is written. The returned
    `validate(forward)` embeds both sets with `forward` (the model's
    `inference.inference_function`) and gives {'mAP', 'top1', 'top5'}. The forward pass
    runs in inference mode, which leaves the batch-norm statistics alone, and
    draws no random numbers, while the training batches depend on the step
    alone; so validating changes nothing about the training.
    """
    if not args.val_query:
        return None
    q_pids, q_fids = common.load_dataset(args.val_query, args.image_root)
    g_pids, g_fids = common.load_dataset(args.val_gallery, args.image_root)
    camera_regex = args.val_camera_regex
    if args.val_excluder == 'folders' and camera_regex is None:
        log.warning('Without --val_camera_regex, the validation excluder `folders` ignores only '
                    'each query\'s own image, as `diagonal` does.')
    excluder = excluders.load(args.val_excluder, q_fids, g_fids, camera_regex,
                              ('--val_excluder', '--val_camera_regex'))
    fids = np.concatenate([q_fids, g_fids])
    decodable_mask(fids, args.image_root, False, args.loading_threads,
                           remedy='or drop their rows from the validation CSVs',
                           max_pixels=args.max_image_pixels)
    batches = image_batches(fids, args.image_root,
                                    (args.net_input_height, args.net_input_width),
                                    loading_threads=args.loading_threads,
                                    antialias=args.antialias,
                                    accurate_jpeg=args.accurate_jpeg)

    def validate(forward):
        embs = np.concatenate([forward(images).numpy() for images in batches]).astype(np.float32)
        common.check_finite(embs, 'validation\'s embeddings of `{}` and `{}`'.format(
            args.val_query, args.val_gallery), 'the network\'s weights are broken; lower '
            '--learning_rate and resume from an earlier checkpoint', fids)
        result = metrics.evaluate(q_pids, q_fids, embs[:len(q_fids)], g_pids, g_fids,
                                  embs[len(q_fids):], excluder, args.metric)
        cmc = result['CMC']
        return {'mAP': result['mAP'], 'top1': metrics.cmc_at(cmc, 1),
                'top5': metrics.cmc_at(cmc, 5)}
    return validate


