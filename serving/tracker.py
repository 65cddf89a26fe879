"""Exports for trackers: ONNX and TensorFlow Lite models with the input
convention that BoxMOT (StrongSORT, BoT-SORT, DeepOCSORT…) and most
trackers' re-id code feed, so that a model trained, imported or adapted
here drops into them as it is.

The convention, which torchreid's models follow and BoxMOT's re-id backends
feed (`boxmot/reid/core/crops.py`): crops resized to the model's input size
H×W, RGB, scaled to [0, 1] and normalised with ImageNet's mean and standard
deviation, as a float32 batch (B, 3, H, W); the embedding (B, D) comes out.
The exported graph undoes the normalisation and feeds the network the
[0, 255] RGB pixels (B, H, W, 3) it was trained on, so that on the same
pixels it embeds exactly as `embed.py` does.

Each file is named after the BoxMOT architecture nearest to the net (BoxMOT
recognises an architecture by its name in the file name), and beside it
lies BoxMOT's metadata sidecar, `<file>.metadata.json`, which BoxMOT reads
for the architecture and the input size, and which also records the
normalisation, the metric and, when an evaluation is given, the distance
threshold.
"""

import os
import re

import keras
import numpy as np
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.models.build import takes_cameras
from triplet_reid.serving import exported

# ImageNet's channel statistics on [0, 1] pixels, as trackers normalise crops.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The BoxMOT architecture nearest to each net of nets/, by the longest prefix
# of the net's name: it names the file, and BoxMOT builds nothing from it
# for ONNX (for TFLite, a randomly initialised model of it that it never
# runs). The nets BoxMOT has no relative of (tiny, lunet) take ResNet-50's
# name, whose preprocessing is the convention above.
BOXMOT_ARCHITECTURES = (
    ('osnet_ain_x0_25', 'osnet_ain_x0_25'), ('osnet_ain_x0_5', 'osnet_ain_x0_5'),
    ('osnet_ain_x0_75', 'osnet_ain_x0_75'), ('osnet_ain', 'osnet_ain_x1_0'),
    ('osnet_ibn', 'osnet_ibn_x1_0'), ('osnet_x0_25', 'osnet_x0_25'),
    ('osnet_x0_5', 'osnet_x0_5'), ('osnet_x0_75', 'osnet_x0_75'), ('osnet', 'osnet_x1_0'),
    ('resnet_v1_101', 'resnet101'), ('fastreid_r101', 'resnet101'),
    ('resnet_v1_152', 'resnet152'), ('mobilenet', 'mobilenetv2_x1_0'),
    ('keras_mobilenet', 'mobilenetv2_x1_0'), ('', 'resnet50'),
)

# The false-positive rate whose distance threshold the sidecar records.
THRESHOLD_RATE = '0.001'

FORMATS = ('onnx', 'tflite')


def boxmot_architecture(net):
    """The BoxMOT architecture name for the net `net` of nets/."""
    return next(name for prefix, name in BOXMOT_ARCHITECTURES if net.startswith(prefix))


def file_names(experiment, experiment_root, formats):
    """{format: file name} of the tracker exports of an experiment: the
    BoxMOT architecture, then the experiment root's name (letters, digits,
    `-` and `_` only), as `osnet_x0_25_market.onnx`."""
    name = re.sub(r'[^A-Za-z0-9_-]+', '_', os.path.basename(os.path.normpath(
        os.path.abspath(experiment_root)))).strip('_') or 'model'
    stem = '{}_{}'.format(boxmot_architecture(experiment.model_name), name)
    return {fmt: '{}.{}'.format(stem, fmt) for fmt in formats}


def tracker_model(model, net_input_size):
    """A Keras model from the tracker convention's (B, 3, H, W) normalised
    float32 crops to the embeddings (B, D) of the trained `model`, whose
    input is (B, H, W, 3) RGB in [0, 255]. A tracker passes crops alone, so
    a model with a camera embedding (SIE) embeds them without a camera, as
    BoxMOT runs CLIP-ReID's models."""
    height, width = net_input_size
    crops = keras.Input((3, height, width), batch_size=None, name='images', dtype='float32')
    scale = np.array(IMAGENET_STD, np.float32) * 255.0
    offset = np.array(IMAGENET_MEAN, np.float32) * 255.0
    pixels = keras.ops.transpose(crops, (0, 2, 3, 1)) * scale + offset
    inputs = pixels
    if takes_cameras(model):
        unknown = keras.ops.cast(keras.ops.zeros_like(pixels[:, 0, 0, 0]), 'int32') - 1
        inputs = {'images': pixels, 'cameras': unknown}
    return keras.Model(crops, model(inputs, training=False)['emb'], name='tracker')


def evaluation_threshold(path):
    """(metric, threshold) that the evaluate.py JSON `path` records for
    verification at a false-positive rate of `THRESHOLD_RATE`: a pair of
    crops nearer than it is the same person. The metric is None for files of
    evaluate.py from before it was stored.

    Raises:
        UserError for a file that holds no such threshold.
    """
    from triplet_reid.storage.json_files import read_json
    remedy = 'pass the --filename JSON of evaluate.py'
    figures = read_json(path, remedy)
    verification = figures.get('verification')
    threshold = verification.get('threshold_at_fpr', {}).get(THRESHOLD_RATE) \
        if isinstance(verification, dict) and isinstance(
            verification.get('threshold_at_fpr'), dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
            not np.isfinite(threshold) or threshold < 0:
        raise cli.UserError('`{}` records no distance threshold at a false-positive rate of {} '
                            '(`verification` of evaluate.py); {}.'.format(
                                path, THRESHOLD_RATE, remedy))
    metric = figures.get('metric')
    return (metric if isinstance(metric, str) else None), float(threshold)


def sidecar(experiment, metric, net, threshold=None, source=None):
    """BoxMOT's metadata sidecar of a tracker export (`schema_version` 1:
    the architecture, the input size, the crop preprocessing), with this
    project's description of the convention under `triplet_reid`.

    Args:
        experiment: the `Experiment` record.
        metric (str): the distance the model was trained for.
        net (str): the BoxMOT architecture name.
        threshold: (metric, distance) from `evaluation_threshold`, or None.
        source (dict): where the model came from (experiment root, checkpoint).
    """
    height, width = experiment.net_input_size
    return {
        'schema_version': 1, 'model_name': net, 'num_classes': 1, 'preprocess': 'resize',
        'model_kwargs_schema_version': 1, 'model_kwargs': {'img_size': [height, width]},
        'img_size': [height, width],
        'triplet_reid': {
            'input': {'name': 'images', 'layout': 'NCHW', 'dtype': 'float32', 'color': 'RGB',
                      'height': height, 'width': width, 'scale': '1/255',
                      'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD)},
            'output': {'name': 'emb', 'embedding_dim': experiment.embedding_dim},
            'metric': metric,
            'threshold': None if threshold is None else {
                'metric': threshold[0] or metric, 'distance': threshold[1],
                'false_positive_rate': float(THRESHOLD_RATE)},
            'source': source or {},
        },
    }


def export_onnx(tracker, path):
    """Converts the Keras `tracker` model to ONNX with tf2onnx, input `images`
    (B, 3, H, W) with a free batch size."""
    spec = tf.TensorSpec((None,) + tuple(tracker.inputs[0].shape[1:]), tf.float32, name='images')
    exported.write_onnx(tf.function(lambda images: {'emb': tracker(images, training=False)}),
                        spec, path)


def export_tflite(tracker, path):
    """Converts the Keras `tracker` model to float32 TensorFlow Lite."""
    exported.write_tflite(tracker, path)


EXPORTERS = {'onnx': export_onnx, 'tflite': export_tflite}
