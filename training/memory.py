"""The memory checks of training: sizes, nets and batches that could never
fit in this machine's memory, or that a net cannot take, are refused before
anything is written or computed for minutes.
"""

import os
import re

import numpy as np
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.experiment import Experiment
from triplet_reid.models.build import with_cameras


def physical_memory():
    """This machine's memory in bytes."""
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def frames_of(args):
    """The images of each of a batch's P×K members: --seq_len frames of a
    tracklet in video training, else one image."""
    return getattr(args, 'seq_len', 0) or 1


def frames_text(args):
    """`×T` for the frames of a video batch in messages, else nothing."""
    return '×{}'.format(frames_of(args)) if frames_of(args) > 1 else ''


def check_memory(args):
    """Refuses sizes that could never fit in this machine's memory, before
    anything is written or allocated: a batch over a quarter of it, counting
    its float32 images at the largest size the input pipeline makes (the
    pre-crop size, or the padded size; T of them for each of the P·K
    tracklets of video training) and the loss's (P·K)² distances and
    masks (four such matrices), or a head whose weights and Adam slots
    (about 2048 × --embedding_dim floats, four times) over half of it."""
    available = physical_memory()
    experiment = Experiment.of(args)
    height, width = experiment.net_input_size
    if args.crop_augment:
        height, width = map(max, experiment.net_input_size, experiment.pre_crop_size)
    height, width = height + 2 * args.pad_crop, width + 2 * args.pad_crop
    size = args.batch_p * args.batch_k
    batch = size * frames_of(args) * height * width * 3 * 4 + size ** 2 * 4 * 4
    if batch > available / 4:
        raise cli.UserError(
            'a batch of {}×{}{} images of {}x{} pixels takes {:.3g} GiB (the images as float32, '
            'and the loss\'s distances between them), more than a quarter of this machine\'s '
            '{:.3g} GiB; lower --batch_p, --batch_k{} or the image sizes (--net_input_*, '
            '--pre_crop_*, --pad_crop).'.format(
                args.batch_p, args.batch_k, frames_text(args), height, width, batch / 2 ** 30,
                available / 2 ** 30, ', --seq_len' if frames_of(args) > 1 else ''))
    head = 2048 * args.embedding_dim * 4 * 4
    if head > available / 2:
        raise cli.UserError(
            '--embedding_dim {} needs {:.3g} GiB for the head\'s weights and their Adam slots, '
            'more than half of this machine\'s {:.3g} GiB; choose a smaller one (the original '
            'used 128).'.format(args.embedding_dim, head / 2 ** 30, available / 2 ** 30))


def input_size_problem(model, size):
    """Why `model` cannot take (H, W) `size` inputs, or None when it can.

    Read from the static shapes of the model traced into a graph, which every
    machine computes alike from the layers' windows, strides and paddings: a
    trial call instead fails, or quietly returns NaN from an empty feature
    map, depending on the CPU's kernels.
    """
    spec = tf.TensorSpec((1,) + tuple(size) + (3,), tf.float32)
    try:
        graph = tf.function(lambda images: model(with_cameras(model, images), training=False)
                            ).get_concrete_function(spec).graph
    except ValueError as e:
        # Keras prints the layer's own message in bold amid a traceback of the trace.
        bold = re.search(r'\x1b\[1m(.*?)\x1b\[0m', str(e), re.S)
        text = bold.group(1) if bold else str(e).strip().splitlines()[-1]
        found = re.search(r'(Negative dimension size caused by subtracting \d+ from \d+) for '
                          r"'\{\{node ([^}]+)\}\}", text)
        if found:
            return '{} at `{}`'.format(found.group(1), found.group(2))
        return ' '.join(text.split())[:300]
    for op in graph.get_operations():
        for tensor in op.outputs:
            if tensor.shape.rank == 4 and 0 in tensor.shape.as_list()[1:3]:
                return 'an empty feature map of {} at `{}`'.format(
                    'x'.join(str(n) for n in tensor.shape.as_list()[1:3]), op.name)
    return None


def activation_bytes(model, size):
    """The bytes of the feature maps (every 4-D floating-point tensor) that a
    training step of `model` computes for one (H, W) `size` image, read from
    its graph: what backpropagation keeps, and more (some are freed early)."""
    spec = tf.TensorSpec((1,) + tuple(size) + (3,), tf.float32)
    graph = tf.function(lambda images: model(with_cameras(model, images), training=True)
                        ).get_concrete_function(spec).graph
    return sum(int(np.prod(tensor.shape.as_list())) * tensor.dtype.size
               for op in graph.get_operations() for tensor in op.outputs
               if tensor.dtype.is_floating and tensor.shape.rank == 4 and
               tensor.shape.is_fully_defined())


def check_input_size(model, args):
    """Refuses a net that cannot take the input size, a batch whose feature
    maps could never fit in this machine's memory, and a net that does not fit in memory
    at one image, before anything is written: an impossible size is refused
    at once rather than computed for minutes."""
    size = Experiment.of(args).net_input_size

    def cannot_take(problem):
        return cli.UserError('the net `{}` cannot take {}x{} inputs ({}); choose a larger '
                             '--net_input_height and --net_input_width.'.format(
                                    args.model_name, size[0], size[1], problem))
    problem = input_size_problem(model, size)
    if problem:
        raise cannot_take(problem)
    batch, available = args.batch_p * args.batch_k * frames_of(args), physical_memory()
    needed = activation_bytes(model, size) * batch
    if needed > available:
        raise cli.UserError(
            'a training batch of {} images of {}x{} through `{}` computes about {:.3g} GiB of '
            'feature maps, more than this machine\'s {:.3g} GiB of memory; lower --batch_p, '
            '--batch_k{} or --net_input_height and --net_input_width.'.format(
                batch, size[0], size[1], args.model_name, needed / 2 ** 30, available / 2 ** 30,
                ', --seq_len' if frames_of(args) > 1 else ''))
    try:
        model(with_cameras(model, tf.zeros((1,) + size + (3,))), training=False)
    except tf.errors.ResourceExhaustedError as e:
        raise cli.UserError('the net `{}` does not fit in memory at {}x{} inputs ({}); choose '
                            'a smaller --net_input_height and --net_input_width.'.format(
                                   args.model_name, size[0], size[1],
                                   str(e).strip().splitlines()[0][:200]))
    except (ValueError, tf.errors.OpError) as e:
        # The shapes allowed it, but a kernel of this machine still refuses it.
        raise cannot_take(str(e).strip().splitlines()[0][:200])
