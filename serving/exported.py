"""The exported forms of an embedding model: the SavedModel with resizing
signatures, ONNX and TensorFlow Lite (float32 or int8), each written beside
its output and renamed into place. export.py is their command line; the
benchmarks time them.
"""


import keras
import numpy as np
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.cli import flags
from triplet_reid.storage import files
from triplet_reid.experiment import Experiment
from triplet_reid.inputs.images import (Preprocessing, decodable_mask, load_training_sets, resize,
                    resize_by_matmul)


# The signature inputs of an exported model: images of any size, and with
# a camera embedding (SIE) each image's row in its table of cameras.
IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name='images')
IMAGES_UINT8 = tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')
CAMERAS = tf.TensorSpec([None], tf.int32, name='cameras')


class EmbeddingModule(tf.Module):
    """The exported object: an embedding model behind resizing signatures.

    A model with a camera embedding (SIE) takes each image's camera too, as
    its row in the table of cameras `sie_cameras` (-1 or any row outside it:
    unknown, no camera embedding); the module keeps the table's names as
    `sie_cameras`, a string variable, for whoever maps cameras to rows."""

    def __init__(self, model, net_input_size, antialias, sie_cameras=None):
        super().__init__()
        self.model = model
        self.net_input_size = tuple(net_input_size)
        self.antialias = antialias
        if sie_cameras:
            self.sie_cameras = tf.Variable(list(sie_cameras), dtype=tf.string, trainable=False)
            self.embed_float = tf.function(self.embed, input_signature=[IMAGES, CAMERAS])
            self.embed_uint8 = tf.function(lambda images, cameras: self.embed(
                tf.cast(images, tf.float32), cameras), input_signature=[IMAGES_UINT8, CAMERAS])
        else:
            self.embed_float = tf.function(self.embed, input_signature=[IMAGES])
            self.embed_uint8 = tf.function(lambda images: self.embed(
                tf.cast(images, tf.float32)), input_signature=[IMAGES_UINT8])

    def embed(self, images, cameras=None):
        # The matrix form converts to ONNX, where TensorFlow's antialiased op does not.
        resized = resize_by_matmul(images, self.net_input_size) if self.antialias \
            else resize(images, self.net_input_size, antialias=False)
        inputs = resized if cameras is None else {'images': resized, 'cameras': cameras}
        return {'emb': self.model(inputs, training=False)['emb']}

    @property
    def input_specs(self):
        """The float32 signature's inputs."""
        return [IMAGES, CAMERAS] if hasattr(self, 'sie_cameras') else [IMAGES]


def export_saved_model(module, output):
    """Writes the SavedModel whole or not at all, never replacing a folder."""
    with files.output(output, directory=True, replace=False) as partial:
        tf.saved_model.save(module, partial, signatures={
            'serving_default': module.embed_float, 'serving_uint8': module.embed_uint8})


def export_onnx(module, path):
    """Converts the float32 signature to ONNX with tf2onnx."""
    write_onnx(module.embed_float, module.input_specs, path)


def write_onnx(function, input_specs, path):
    """Converts the tf.function `function` of the inputs `input_specs` (a
    TensorSpec or a list of them) to ONNX (opset 17) with tf2onnx, written
    next to `path` and renamed into place."""
    import tf2onnx
    specs = input_specs if isinstance(input_specs, (list, tuple)) else [input_specs]
    with files.output(path, replace=False) as partial:
        tf2onnx.convert.from_function(function, input_signature=list(specs), opset=17,
                                      output_path=partial)


def export_tflite(module, path, representative=None):
    """Converts the model at the net input size to TensorFlow Lite, float32 or,
    with `representative` images (N, H, W, 3), int8-quantised and calibrated
    on them; writes it next to `path` and renames it into place."""
    write_tflite(keras.Model(module.model.inputs, module.model.output['emb']), path,
                 representative)


def write_tflite(model, path, representative=None):
    """Converts the Keras `model` to TensorFlow Lite (int8 calibrated on
    `representative` inputs when given), written as `export_tflite` writes.

    A model with layer norms (a vision transformer) gets int8 weights with
    its activations quantised on the fly (dynamic range) instead: int8
    activations through its layer norms, softmax and GELU lost too much (a
    mean cosine of 0.55 to the float model for ViT-B/16 in bench/vit_peers.py)."""
    # From a Keras model: the converter then freezes its variables (from a
    # concrete function it kept them as resource variables TFLite cannot read).
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not has_layer_norm(model):
            converter.representative_dataset = lambda: (
                [image[None]] for image in representative)
    files.atomic_write(path, converter.convert(), 'wb', replace=False)


def has_layer_norm(model):
    """Whether the Keras `model`, or a model inside it, has a layer norm."""
    return any(isinstance(layer, keras.layers.LayerNormalization) or
               (hasattr(layer, 'layers') and has_layer_norm(layer)) for layer in model.layers)


def run_tflite(interpreter, images, cameras=None):
    """The embeddings (B, D) of a TensorFlow Lite model, its LiteRT
    `interpreter` (or the path of its file), of `images` (B, H, W, 3), and
    for a model with a camera embedding of their `cameras`' rows (B,)."""
    if isinstance(interpreter, str):
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=interpreter)
    inputs = {detail['name']: detail['index'] for detail in interpreter.get_input_details()}
    given = {next(i for name, i in inputs.items() if 'camera' not in name): images}
    if cameras is not None:
        given[next(i for name, i in inputs.items() if 'camera' in name)] = cameras
    for index, value in given.items():
        interpreter.resize_tensor_input(index, value.shape)
    interpreter.allocate_tensors()
    for index, value in given.items():
        interpreter.set_tensor(index, value)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])


def xnnpack_problem(path, net_input_size):
    """Why the TFLite model `path` does not run with TensorFlow Lite's default
    XNNPACK delegate (the first line of the error), or None when it does.
    Some int8 models (OSNet's) fail there and run with the built-in kernels
    alone."""
    # LiteRT's interpreter, which replaces TensorFlow's own (deprecated,
    # and to be deleted from TensorFlow).
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    index = interpreter.get_input_details()[0]['index']
    try:
        interpreter.resize_tensor_input(index, (1,) + tuple(net_input_size) + (3,))
        interpreter.allocate_tensors()
    except RuntimeError as e:
        return str(e).splitlines()[0][:200]
    return None


def calibration_images(train_args, count, paths=None):
    """The first `count` decodable images of the experiment's training CSV
    (of each CSV in turn, when it trained on several), or of the image files
    and folders `paths` when given, at its net input size: (N, H, W, 3)
    float32, for --tflite_int8. Damaged and oversized images are left out
    with a warning, as training can skip them.

    Raises:
        UserError when a CSV or its image root cannot be read, or for an
        experiment without a training set (an imported model) and no `paths`.
    """
    if paths:
        root, fids = common.common_root(common.find_images(paths))
        fids = fids[decodable_mask(fids, root, skip=True)][:count]
        source = ' + '.join(paths)
    elif train_args.get('train_set') is None:
        raise cli.UserError('--tflite_int8 calibrates on the training images, and this '
                            'experiment (an imported model) has none; pass some of your own '
                            'with --calibration_images. Nothing was exported.')
    else:
        parts = load_training_sets(train_args['train_set'], train_args['image_root'],
                                   skip=True)
        _, fids, root = common.merge_datasets(parts)
        # With several sets, each has its say in the calibration: their images
        # are taken in turn (the first of each set, then the second, ...).
        rank = np.concatenate([np.arange(len(part[1])) for part in parts])
        set_of = np.concatenate([np.full(len(part[1]), i) for i, part in enumerate(parts)])
        fids = fids[np.lexsort((set_of, rank))][:count]
        source = ' + '.join(flags.as_list(train_args['train_set']))
    if not len(fids):
        raise cli.UserError('none of the images of `{}` can be decoded to calibrate '
                            '--tflite_int8. Nothing was exported.'.format(source))
    preprocessing = Preprocessing.of(Experiment.of(train_args))
    return tf.stack([preprocessing.load(fid, root) for fid in fids]).numpy()
