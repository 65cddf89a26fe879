#!/usr/bin/env python3
"""Train a person re-identification embedding with the batch-hard triplet loss.

Rerunning with the same `--experiment_root` resumes the experiment from its
last checkpoint, with the arguments stored in its `args.json`.
"""

import argparse
import contextlib
import logging
import os
import re
import secrets
import sys
import time
from datetime import timedelta

import common
import startup

# Before anything imports TensorFlow: see startup.quiet_tensorflow.
startup.quiet_tensorflow()

import numpy as np
import tensorflow as tf
import keras

import detailed_logs
import distributed
import experiment
import loss
import sampler
import validation
from excluders import EXCLUDER_CHOICES
from heads import HEAD_CHOICES
from model import build_model, inference_function, load_body_weights, restore
from nets import LAST_STRIDE_NETS, NET_CHOICES
from nets._layers import POOLINGS
from uninterrupt import Uninterrupt

log = logging.getLogger('train')

LR_SCHEDULES = ('exponential', 'step', 'cosine')


parser = argparse.ArgumentParser(
    description='Train a ReID network.',
    epilog='Rerunning with an existing --experiment_root resumes that experiment.')

# Required.

parser.add_argument(
    '--experiment_root', required=True, type=common.writeable_directory,
    help='Location used to store checkpoints and dumped data.')

parser.add_argument(
    '--train_set',
    help='Path to the train_set csv file (rows `identity,relative/path`, no header).')

parser.add_argument(
    '--image_root', type=common.readable_directory,
    help='Path that will be pre-pended to the filenames in the train_set csv.')

# Optional with sane defaults.

parser.add_argument(
    '--resume', action='store_true', default=False,
    help='Resume the experiment in --experiment_root. Rerunning with an existing '
         'experiment root resumes anyway; with this flag a missing `args.json` is an error. '
         'All other arguments are taken from the stored `args.json`.')

parser.add_argument(
    '--override', action='store_true', default=False,
    help='When resuming, use the arguments given on the command line instead of the stored '
         'ones; each change is logged and stored in args.json. For example, continue a '
         'finished experiment with a larger --train_iterations, or rerun with a lower '
         '--learning_rate after the loss became NaN. The architecture ({}) cannot change.'.format(
             ', '.join('--' + a for a in experiment.ARCHITECTURE_ARGUMENTS)))

parser.add_argument(
    '--model_name', default='resnet_v1_50', choices=NET_CHOICES,
    help='Name of the model to use.')

parser.add_argument(
    '--head_name', default='fc1024', choices=HEAD_CHOICES,
    help='Name of the head to use.')

parser.add_argument(
    '--embedding_dim', default=128, type=common.positive_int,
    help='Dimensionality of the embedding space.')

parser.add_argument(
    '--pooling', default='avg', choices=POOLINGS,
    help='The global pooling of the body\'s feature map: average (the original), max, or '
         'GeM (generalised mean with a learnable exponent, initially 3).')

parser.add_argument(
    '--last_stride', default=2, type=int, choices=(1, 2),
    help='The stride of the body\'s last stage. 1 (BoT) doubles the height and width of '
         'the final feature map, for finer features at more compute; pretrained weights '
         'still load. For {}.'.format(', '.join(LAST_STRIDE_NETS)))

parser.add_argument(
    '--initial_checkpoint', default=None,
    help='Pretrained weights for the network body: a Keras weights file (.weights.h5) or '
         'a TF2 checkpoint prefix holding `body` (such as another experiment\'s checkpoint).')

parser.add_argument(
    '--batch_p', default=32, type=common.positive_int,
    help='The number P used in the PK-batches: identities per batch.')

parser.add_argument(
    '--batch_k', default=4, type=common.positive_int,
    help='The number K used in the PK-batches: images per identity (at least 2).')

parser.add_argument(
    '--net_input_height', default=256, type=common.positive_int,
    help='Height of the input directly fed into the network.')

parser.add_argument(
    '--net_input_width', default=128, type=common.positive_int,
    help='Width of the input directly fed into the network.')

parser.add_argument(
    '--pre_crop_height', default=288, type=common.positive_int,
    help='Height used to resize a loaded image. This is ignored when no crop '
         'augmentation is applied.')

parser.add_argument(
    '--pre_crop_width', default=144, type=common.positive_int,
    help='Width used to resize a loaded image. This is ignored when no crop '
         'augmentation is applied.')

parser.add_argument(
    '--antialias', default=True, action=argparse.BooleanOptionalAction,
    help='Resize images with an antialiasing filter when shrinking them, as PIL does, so '
         'that thin structures survive. Stored with the experiment: embed.py, validation and '
         'export.py resize as training did. Experiments from before this flag resized '
         'without (--no-antialias) and keep doing so.')

parser.add_argument(
    '--accurate_jpeg', default=True, action=argparse.BooleanOptionalAction,
    help='Decode JPEGs with the accurate integer DCT, as PIL and OpenCV do, rather than '
         'TensorFlow\'s fast default (about one grey level off per pixel). Stored with the '
         'experiment like --antialias; experiments from before this flag keep the fast DCT.')

parser.add_argument(
    '--loading_threads', default=8, type=common.positive_int,
    help='Number of threads used for parallel loading.')

parser.add_argument(
    '--margin', default='soft', type=common.margin,
    help='What margin to use: a float value for hard-margin, "soft" for '
         'soft-margin, or no margin if "none".')

parser.add_argument(
    '--metric', default='euclidean', choices=loss.cdist.supported_metrics,
    help='Which metric to use for the distance between embeddings.')

parser.add_argument(
    '--loss', default='batch_hard', choices=loss.LOSS_CHOICES.keys(),
    help='The triplet loss variant: `batch_hard` (the hardest positive and negative of '
         'each anchor), `batch_all` (every triplet, averaged over the non-zero terms), '
         '`batch_all_mean` (every triplet, averaged over all), `batch_sample` (a positive and '
         'a negative drawn by their distances) or `weighted` (softmax-weighted positives and '
         'negatives). The README says which to use when.')

parser.add_argument(
    '--id_loss_weight', default=0.0, type=common.nonnegative_float,
    help='Add a softmax cross-entropy identity loss over the training identities, with this '
         'weight, on a bias-free classifier of the embedding (after the batch norm of the '
         'bnneck heads, before the L2 normalisation of the _normalize heads). The classifier is '
         'checkpointed but not exported. BoT: 1. '
         '0: off, as the original. Also the usual remedy when training from scratch collapses.')

parser.add_argument(
    '--label_smoothing', default=0.1, type=common.unit_float,
    help='Label smoothing of the identity loss (Szegedy et al. 2016): the target gives 1 - e + '
         'e/C to the true identity and e/C to each of the C others. Only used with '
         '--id_loss_weight.')

parser.add_argument(
    '--center_loss_weight', default=0.0, type=common.nonnegative_float,
    help='Add the center loss (Wen et al. 2016) with this weight: the squared distance of each '
         'embedding (before the batch norm of bnneck) to a center of its identity. The centers '
         'learn by plain SGD at --center_learning_rate from the unweighted loss, as in BoT. '
         'BoT: 5e-4. 0: off.')

parser.add_argument(
    '--center_learning_rate', default=0.5, type=common.positive_float,
    help='The SGD learning rate of the centers of --center_loss_weight (BoT: 0.5).')

parser.add_argument(
    '--learning_rate', default=3e-4, type=common.positive_float,
    help='The initial value of the learning-rate, before it kicks in.')

parser.add_argument(
    '--train_iterations', default=25000, type=common.positive_int,
    help='Number of training iterations.')

parser.add_argument(
    '--decay_start_iteration', default=15000, type=int,
    help='At which iteration the learning-rate decay should kick-in. '
         'Set to -1 to disable decay completely.')

parser.add_argument(
    '--lr_schedule', default='exponential', choices=LR_SCHEDULES,
    help='`exponential`: the original\'s decay from --decay_start_iteration down to 0.001x at '
         'the last iteration. `cosine`: half a cosine from --decay_start_iteration down to 0. '
         '`step`: multiply by --lr_decay_factor at each of --lr_decay_steps.')

parser.add_argument(
    '--lr_decay_steps', default=[], type=common.positive_int, nargs='+',
    help='The iterations at which `--lr_schedule step` multiplies the learning rate by '
         '--lr_decay_factor (BoT: 40 and 70 of 120 epochs).')

parser.add_argument(
    '--lr_decay_factor', default=0.1, type=common.positive_float,
    help='The factor of each step of `--lr_schedule step`.')

parser.add_argument(
    '--warmup_iterations', default=0, type=common.nonnegative_int,
    help='Raise the learning rate linearly from 1%% of the schedule\'s value to all of it '
         'over this many first iterations (BoT: 10 epochs). 0: no warm-up, as the original.')

parser.add_argument(
    '--weight_decay', default=0.0, type=common.nonnegative_float,
    help='L2 regularisation of every trainable weight, coupled as in BoT\'s Adam: the loss '
         'gains weight_decay/2 · ‖w‖², so each gradient gains weight_decay · w, which Adam '
         'then normalises (unlike the decoupled AdamW). BoT: 5e-4. 0: none, as the original.')

parser.add_argument(
    '--checkpoint_frequency', default=1000, type=common.nonnegative_int,
    help='After how many iterations a checkpoint is stored. Set this to 0 to '
         'disable intermediate storing. This will result in only one final '
         'checkpoint.')

parser.add_argument(
    '--flip_augment', action='store_true', default=False,
    help='When this flag is provided, flip augmentation is performed.')

parser.add_argument(
    '--crop_augment', action='store_true', default=False,
    help='When this flag is provided, crop augmentation is performed: images are resized '
         'to the pre-crop size and a random crop of the net input size is taken.')

parser.add_argument(
    '--pad_crop', default=0, type=common.nonnegative_int,
    help='Pad every training image with this many black pixels on each side and take a random '
         'crop of the net input size (BoT: 10 at 256x128), an alternative to --crop_augment. '
         '0: off.')

parser.add_argument(
    '--random_erasing', default=0.0, type=common.unit_float,
    help='The probability of random erasing (Zhong et al. 2020) of each training image: a '
         'rectangle of 2-40%% of its area, aspect 0.3-3.3, is filled (see --erasing_fill). '
         'BoT: 0.5. 0: off.')

parser.add_argument(
    '--erasing_fill', default='mean', choices=sampler.ERASING_FILLS,
    help='What --random_erasing fills with: the ImageNet mean colour or uniform noise.')

parser.add_argument(
    '--detailed_logs', action='store_true', default=False,
    help='Store very detailed logs of the training in addition to TensorBoard'
         ' summaries. These are mem-mapped numpy files containing the'
         ' embeddings, losses and FIDs seen in each batch during training.'
         ' Everything can be re-constructed and analyzed that way.')

parser.add_argument(
    '--keep_checkpoints', default=None, type=common.positive_int,
    help='Keep only the newest N checkpoints; all are kept by default, as the original.')

parser.add_argument(
    '--skip_corrupt_images', action='store_true', default=False,
    help='Train without images that cannot be decoded (corrupt, truncated, not an image), '
         'with a warning and their count. By default such images stop training before it '
         'starts, naming them.')

parser.add_argument(
    '--max_image_pixels', default=sampler.MAX_IMAGE_PIXELS, type=common.positive_int,
    help='Refuse images whose headers declare more pixels than this (or skip them with '
         '--skip_corrupt_images) before decoding them, as a small file can hold a huge picture '
         'that would exhaust memory.')

parser.add_argument(
    '--deterministic', action='store_true', default=False,
    help='Use deterministic TensorFlow kernels and run operations one at a time, so that a '
         'run with --seed gives bit-identical weights however often it is interrupted and '
         'resumed. Slower.')

parser.add_argument(
    '--mixed_precision', default='off', choices=('off', 'float16', 'bfloat16'),
    help='Compute the network in float16 (with loss scaling) or bfloat16, keeping weights, '
         'distances and losses in float32. Fast on GPUs with tensor cores (bfloat16 on '
         'Ampere and newer); slow on most CPUs.')

parser.add_argument(
    '--xla', action='store_true', default=False,
    help='Compile the forward and backward pass with XLA (jit_compile). Usually faster on '
         'GPUs; the first step takes longer.')

parser.add_argument(
    '--distribution', default='none', choices=('none', 'mirrored', 'multi_worker'),
    help='`mirrored`: split each batch over the visible GPUs (MirroredStrategy). '
         '`multi_worker`: over several machines configured by TF_CONFIG '
         '(MultiWorkerMirroredStrategy). P must be a multiple of the number of replicas; each '
         'replica gets whole identities.')

parser.add_argument(
    '--per_replica_mining', action='store_true', default=False,
    help='With several replicas, mine hard positives and negatives within each replica\'s '
         'part of the batch only. By default the embeddings of all replicas are gathered so '
         'every anchor sees the whole P×K batch, as on a single device.')

parser.add_argument(
    '--val_query', default=None,
    help='Validate during training: the query CSV (paths relative to --image_root). Every '
         '--val_every iterations the network embeds it and --val_gallery and is evaluated; '
         'val/mAP, val/top1 and val/top5 go to TensorBoard and the log, and the best '
         'checkpoint so far is kept in `best/` (see best.json).')

parser.add_argument(
    '--val_gallery', default=None,
    help='The gallery CSV of validation; needs --val_query.')

parser.add_argument(
    '--val_excluder', default=None, choices=EXCLUDER_CHOICES,
    help='The excluder of validation, as evaluate.py\'s --excluder; needs --val_query.')

parser.add_argument(
    '--val_camera_regex', default=None,
    help='With --val_excluder folders: the regular expression whose first group, searched in '
         'each file name, is its camera (as evaluate.py\'s --camera_regex); same-camera '
         'matches of the same identity are then ignored.')

parser.add_argument(
    '--val_every', default=1000, type=common.positive_int,
    help='Validate every this many iterations, and after the last one.')

parser.add_argument(
    '--seed', default=None, type=common.seed,
    help='Seed of the sampler and the augmentation: two runs with the same seed see the '
         'same batches. Chosen at random (and stored in args.json) when not given.')


parser.add_argument(
    '--histogram_every', default=10, type=common.positive_int,
    help='Write the TensorBoard histograms (loss_distribution, embedding_dists, …) every this '
         'many iterations; the scalars are written every iteration. 1 writes them every '
         'iteration, as the original did, at a cost noticeable with small nets.')

parser.add_argument(
    '--collapse_patience', default=100, type=common.nonnegative_int,
    help='Warn when training has looked collapsed for this many iterations in a row: the loss '
         'within 10%% of its value for equal distances (ln 2 for the soft margin) and the '
         'embeddings closer to each other than 10%% of their distance from the origin. 0 turns '
         'the warning off.')


# The per-image losses beside the triplet loss, as the step returns and
# TensorBoard shows them.
AUXILIARY_LOSSES = ('id_loss', 'center_loss')


class TrainingDiverged(common.UserError):
    """The loss became NaN or infinite; reported like bad input, as the remedy is the user's."""


# Collapse: the loss within COLLAPSE_BAND (relative, or absolute for a zero
# collapse value) of `loss.collapse_value`, and no identity structure in the
# batch: the embedding spread below COLLAPSE_SPREAD (all points in one), or
# the batch top-k precision at most COLLAPSE_CHANCE times its chance level
# (points spread out at random, as a net that learns nothing gives them). A
# healthy run leaves the collapse value within tens of iterations, keeps a
# spread above 0.3, and soon ranks above chance.
COLLAPSE_BAND = 0.1
COLLAPSE_SPREAD = 0.1
COLLAPSE_CHANCE = 2


def looks_collapsed(mean_loss, spread, margin, precision=1.0, chance=0.0):
    """Whether one step looks collapsed, from its mean loss, its
    `loss.embedding_spread`, its batch top-k precision and that precision's
    chance level ((K - 1) / (P·K - 1) for P×K batches)."""
    value = loss.collapse_value(margin)
    tolerance = COLLAPSE_BAND * (value if value > 0 else 1.0)
    return abs(mean_loss - value) <= tolerance and (
        spread < COLLAPSE_SPREAD or precision <= COLLAPSE_CHANCE * chance)


def collapse_warning(iterations, margin):
    return ('Training looks collapsed: for {} iterations the loss has stayed at {:.3f}, its '
            'value when all distances are equal, and the batches show no identities: the '
            'embeddings lie within {:.0%} of their distance from the origin of each other '
            '(TensorBoard: embedding_spread), or rank the same identity first no better than '
            '{} times chance (batch_prec_at_k). Such a run rarely recovers. Remedies: an '
            'identity loss (--id_loss_weight 1, best with --head_name bnneck), a lower '
            '--learning_rate, a pretrained body (--initial_checkpoint), a smaller net, or '
            'another --loss or --margin; see "When training collapses" in the README.'.format(
                iterations, loss.collapse_value(margin), COLLAPSE_SPREAD, COLLAPSE_CHANCE))


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at each iteration (counted from 0).

    `exponential` is the original's schedule: constant until `decay_start`,
    then exponential decay that reaches 0.001 × `initial` at `end`. `cosine`
    is constant until `decay_start`, then follows half a cosine down to 0 at
    `end`. For both, a negative `decay_start` (or one at or past `end`)
    disables the decay. `step` multiplies the rate by `factor` at each
    iteration of `steps`. A positive `warmup` scales the first `warmup`
    iterations linearly from 1% up to the full rate of the schedule.
    """

    def __init__(self, initial, decay_start, end, schedule='exponential', warmup=0, steps=(),
                 factor=0.1):
        self.initial, self.decay_start, self.end = float(initial), int(decay_start), int(end)
        self.schedule, self.warmup, self.factor = schedule, int(warmup), float(factor)
        self.steps = tuple(int(s) for s in steps)

    def decayed(self, step):
        """The schedule without warm-up: a float32 scalar."""
        step = tf.cast(step, tf.float32)
        if self.schedule == 'step':
            passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.steps or (0,), tf.float32),
                                           tf.float32)) if self.steps else 0.0
            return self.initial * tf.pow(self.factor, passed)
        if not 0 <= self.decay_start < self.end:
            return tf.constant(self.initial, tf.float32)
        progress = tf.maximum(0.0, step - self.decay_start) / (self.end - self.decay_start)
        if self.schedule == 'cosine':
            return self.initial * 0.5 * (1.0 + tf.cos(np.pi * tf.minimum(progress, 1.0)))
        return self.initial * tf.pow(0.001, progress)

    def __call__(self, step):
        rate = self.decayed(step)
        if self.warmup > 0:
            fraction = tf.minimum(tf.cast(step, tf.float32) / self.warmup, 1.0)
            rate *= 0.01 + 0.99 * fraction
        return rate

    def get_config(self):
        return {'initial': self.initial, 'decay_start': self.decay_start, 'end': self.end,
                'schedule': self.schedule, 'warmup': self.warmup, 'steps': self.steps,
                'factor': self.factor}


def format_eta(seconds):
    """`H:MM:SS` (with days when longer), or a plain statement beyond 100
    years, which no `timedelta` holds for --train_iterations near 2**63."""
    if seconds > 100 * 365 * 86400:
        return 'more than 100 years'
    return str(timedelta(seconds=int(seconds)))


def check_memory(args):
    """Refuses sizes that could never fit in this machine's memory, before
    anything is written or allocated: a batch over a quarter of it, counting
    its float32 images at the largest size the input pipeline makes (the
    pre-crop size, or the padded size) and the loss's (P·K)² distances and
    masks (four such matrices), or a head whose weights and Adam slots
    (about 2048 × --embedding_dim floats, four times) over half of it."""
    memory = common.physical_memory()
    height, width = args.net_input_height, args.net_input_width
    if args.crop_augment:
        height, width = max(height, args.pre_crop_height), max(width, args.pre_crop_width)
    height, width = height + 2 * args.pad_crop, width + 2 * args.pad_crop
    size = args.batch_p * args.batch_k
    batch = size * height * width * 3 * 4 + size ** 2 * 4 * 4
    if batch > memory / 4:
        raise common.UserError(
            'a batch of {}×{} images of {}x{} pixels takes {:.3g} GiB (the images as float32, '
            'and the loss\'s distances between them), more than a quarter of this machine\'s '
            '{:.3g} GiB; lower --batch_p, --batch_k or the image sizes (--net_input_*, '
            '--pre_crop_*, --pad_crop).'.format(args.batch_p, args.batch_k, height, width,
                                                batch / 2 ** 30, memory / 2 ** 30))
    head = 2048 * args.embedding_dim * 4 * 4
    if head > memory / 2:
        raise common.UserError(
            '--embedding_dim {} needs {:.3g} GiB for the head\'s weights and their Adam slots, '
            'more than half of this machine\'s {:.3g} GiB; choose a smaller one (the original '
            'used 128).'.format(args.embedding_dim, head / 2 ** 30, memory / 2 ** 30))


def check_arguments(args):
    """Refuses argument combinations that cannot train, before anything is written."""
    if not args.train_set:
        raise common.UserError('you did not specify the `--train_set` argument.')
    if not args.image_root:
        raise common.UserError('you did not specify the `--image_root` argument.')
    if args.distribution == 'multi_worker' and args.seed is None:
        raise common.UserError('--distribution multi_worker needs --seed, so that all workers '
                               'sample the same batches.')
    if args.batch_k < 2:
        raise common.UserError('--batch_k {} leaves no positive pair in a batch, so the '
                               'triplet loss has nothing to pull together; use --batch_k 2 '
                               'or more.'.format(args.batch_k))
    given = [flag for flag in ('val_query', 'val_gallery', 'val_excluder') if getattr(args, flag)]
    if given and len(given) < 3:
        raise common.UserError('validation needs --val_query, --val_gallery and --val_excluder '
                               'together; only --{} was given.'.format(', --'.join(given)))
    if args.val_camera_regex is not None and args.val_excluder != 'folders':
        raise common.UserError('--val_camera_regex is for --val_excluder folders.')
    if args.lr_schedule == 'step' and not args.lr_decay_steps:
        raise common.UserError('--lr_schedule step needs the iterations to step at, for example '
                               '--lr_decay_steps 8000 14000.')
    if args.last_stride != 2 and args.model_name not in LAST_STRIDE_NETS:
        raise common.UserError('--last_stride {} works with the nets {}, not with `{}`.'.format(
            args.last_stride, ', '.join(LAST_STRIDE_NETS), args.model_name))
    if args.crop_augment and args.pad_crop:
        raise common.UserError('--crop_augment and --pad_crop are two ways of cropping; choose '
                               'one.')
    check_memory(args)
    if args.crop_augment and (args.pre_crop_height < args.net_input_height or
                              args.pre_crop_width < args.net_input_width):
        raise common.UserError('with --crop_augment the pre-crop size {}x{} must be at least '
                               'the net input size {}x{}.'.format(
                                   args.pre_crop_height, args.pre_crop_width,
                                   args.net_input_height, args.net_input_width))


def write_summaries(writer, step, out, lr, seconds, batch_k, histograms=True):
    """The original's TensorBoard scalars for one step, and its histograms when
    `histograms` (they cost more than the step of a small net)."""
    with writer.as_default(step=step):
        tf.summary.scalar('loss', tf.reduce_mean(out['losses']))
        tf.summary.scalar('batch_top1', out['top1'])
        tf.summary.scalar('batch_prec_at_{}'.format(batch_k - 1), out['prec_at_k'])
        tf.summary.scalar('active_count', out['active_count'])
        tf.summary.scalar('learning_rate', lr)
        tf.summary.scalar('secs_per_iter', seconds)
        tf.summary.scalar('embedding_spread', out['spread'])
        for name in AUXILIARY_LOSSES:
            if name in out:
                tf.summary.scalar(name, tf.reduce_mean(out[name]))
        if not histograms:
            return
        tf.summary.histogram('loss_distribution', out['losses'])
        tf.summary.histogram('embedding_dists', out['dists'])
        dists = out['dists'].numpy()
        tf.summary.histogram('embedding_pos_dists', dists[out['pos_mask'].numpy() == 1])
        tf.summary.histogram('embedding_neg_dists', dists[out['neg_mask'].numpy() == 1])
        tf.summary.histogram('embedding_lengths', out['emb_lengths'])


def auxiliary_heads(args, num_ids, embedding_dim):
    """What --id_loss_weight and --center_loss_weight train beside the model,
    to be built in the strategy's scope: a dict with the identity
    `classifier` (a bias-free Dense layer, initialised with std 0.001 as in
    BoT) and the identity `centers` (C, D) with their own SGD
    `center_optimizer`, each only when its loss is on. All of it belongs in
    the checkpoint and none of it in the exported model."""
    extras = {}
    if args.id_loss_weight:
        classifier = keras.layers.Dense(
            num_ids, use_bias=False, dtype='float32', name='classifier',
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
        classifier.build((None, embedding_dim))
        extras['classifier'] = classifier
    if args.center_loss_weight:
        extras['centers'] = tf.Variable(
            keras.random.normal((num_ids, embedding_dim)), trainable=False, name='centers')
        extras['center_optimizer'] = keras.optimizers.SGD(args.center_learning_rate)
        extras['center_optimizer'].build([extras['centers']])
    return extras


def check_identity_count(path, num_ids, train_set):
    """Refuses to resume the identity or center loss of the checkpoint `path`
    on a training set with another number of identities, which their
    (C, ...) weights cannot take."""
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    for name, shape in shapes.items():
        stored = shape[-1] if re.match(r'classifier/_?kernel/', name) else \
            shape[0] if name.startswith('centers/') else None
        if stored is not None and stored != num_ids:
            raise common.UserError(
                'the checkpoint `{}` learned {} training identities for its identity or center '
                'loss, but `{}` now has {}; those losses tie an experiment to its identities. '
                'Start a new experiment root, with --initial_checkpoint `{}` to reuse its '
                'body.'.format(path, stored, train_set, num_ids, path))


def trainable_variables(model, extras):
    """The variables the main optimizer trains: the model's and the classifier's."""
    classifier = extras.get('classifier')
    return model.trainable_variables + (classifier.trainable_variables if classifier else [])


def sequential_ops():
    """Runs independent operations one after another (one inter-op thread).

    With --deterministic, each kernel is deterministic, but at the demo's batch
    size (P=18, K=4, 128×64) operations that run side by side in the
    inter-op pool still let two runs drift apart from the second step: their
    order of execution changes what the oneDNN kernels and the gradient
    accumulation compute. One inter-op thread makes the order fixed; kernels
    keep their intra-op threads, so a step of the tiny net costs the same.
    It must be set before TensorFlow runs its first operation; in a process
    that already ran some (such as a test calling main() twice), a warning
    says so when the setting differs.
    """
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if tf.config.threading.get_inter_op_parallelism_threads() != 1:
            log.warning('--deterministic could not fix the order of operations, as TensorFlow '
                        'already runs in this process; runs may differ in the last bits.')


def check_input_size(model, args):
    """Refuses a net that cannot take the input size, before anything is written."""
    size = (args.net_input_height, args.net_input_width)
    try:
        model(tf.zeros((1,) + size + (3,)), training=False)
    except tf.errors.ResourceExhaustedError as e:
        raise common.UserError('the net `{}` does not fit in memory at {}x{} inputs ({}); choose '
                               'a smaller --net_input_height and --net_input_width.'.format(
                                   args.model_name, size[0], size[1],
                                   str(e).strip().splitlines()[0][:200]))
    except (ValueError, tf.errors.OpError) as e:
        raise common.UserError('the net `{}` cannot take {}x{} inputs ({}); choose a larger '
                               '--net_input_height and --net_input_width.'.format(
                                   args.model_name, size[0], size[1],
                                   str(e).strip().splitlines()[0]))


def make_train_step(model, optimizer, step, args, strategy, extras=None):
    """The training step: a `tf.function` from one (per-replica) batch of
    images and integer labels to a dict of global tensors.

    Each replica embeds its images; unless --per_replica_mining, it gathers
    the embeddings of all replicas so that its anchors are mined against the
    whole batch. Its loss is the sum of its anchors' losses (and of the
    weighted identity and center losses of its images) over the global batch
    size, so that the summed gradients equal a single device's. `extras` is
    `auxiliary_heads`'s dict.

    Returns:
        (train_step, gradients): `gradients(images, labels)` computes the
        global per-anchor losses and the summed gradients of the trainable
        variables (and, last, of the centers) without applying them, to
        compare a distributed step with a single device's.
    """
    extras = extras or {}
    loss_fn = loss.LOSS_CHOICES[args.loss]
    replicas = strategy.num_replicas_in_sync
    global_mining = replicas > 1 and not args.per_replica_mining
    global_batch = args.batch_p * args.batch_k
    variables = trainable_variables(model, extras)
    weights = {'id_loss': args.id_loss_weight, 'center_loss': args.center_loss_weight}

    # XLA compiles the network's forward pass and, through the tape, its
    # backward pass; the gathering across replicas stays outside it.
    forward = tf.function(lambda images: model(images, training=True), jit_compile=True) \
        if args.xla else (lambda images: model(images, training=True))

    def auxiliary_losses(endpoints, emb, labels):
        """The per-image identity and center losses that are on: {name: (b,)}."""
        terms = {}
        if 'classifier' in extras:
            # Before any L2 normalisation: a softmax over unit vectors would need a
            # temperature to reach confident logits, and learns nothing without one.
            logits = extras['classifier'](tf.cast(endpoints['emb_raw'], tf.float32))
            terms['id_loss'] = loss.identity_loss(logits, labels, args.label_smoothing)
        if 'centers' in extras:
            terms['center_loss'] = loss.center_loss(emb, extras['centers'], labels)
        return terms

    def replica_gradients(images, labels):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            endpoints = forward(images)
            emb = tf.cast(endpoints.get('metric_emb', endpoints['emb']), tf.float32)
            batch_emb, batch_labels, anchors = emb, labels, None
            if global_mining:
                batch_emb = distributed.all_gather(emb)
                batch_labels = distributed.all_gather(labels)
                anchors = context.replica_id_in_sync_group * tf.shape(emb)[0] + tf.range(
                    tf.shape(emb)[0])
            dists = loss.cdist(emb, batch_emb, metric=args.metric)
            # Losses that draw at random draw from the step, so resuming redraws the same.
            losses = loss_fn(dists, batch_labels, args.margin, anchors=anchors,
                             seed=sampler.stream_seed(args.seed, 4, step))
            terms = auxiliary_losses(endpoints, emb, labels)
            total = tf.add_n([tf.reduce_sum(losses)] + [
                weights[name] * tf.reduce_sum(value) for name, value in terms.items()])
            total /= global_batch
            if args.weight_decay:
                # Each replica adds its share, so that the sum over replicas adds it once.
                total += args.weight_decay / (2 * replicas) * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
            scaled = optimizer.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        same, positive, negative = loss.identity_masks(batch_labels, anchors)
        top1, prec_at_k, _ = loss.top_k_precision(dists, same, args.batch_k - 1)
        # Masks travel as int32: tf.distribute cannot gather booleans.
        return grads, dict(terms, **{
            'losses': losses, 'emb': emb, 'dists': dists, 'labels': labels,
            'pos_mask': tf.cast(positive, tf.int32), 'neg_mask': tf.cast(negative, tf.int32),
            'top1': top1[None], 'prec_at_k': prec_at_k[None],
            'emb_lengths': tf.norm(tf.cast(endpoints['emb_raw'], tf.float32), axis=1)})

    def center_gradients(out):
        """The centers' gradient of the unweighted center loss, as BoT steps them."""
        return loss.center_gradient(out['emb'], extras['centers'], out['labels']) / global_batch

    def replica_step(images, labels):
        grads, out = replica_gradients(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        if 'centers' in extras:
            extras['center_optimizer'].apply_gradients([(center_gradients(out),
                                                         extras['centers'])])
        if replicas > 1:
            # Every replica gets the whole batch's values; the first one's are kept.
            out = {key: distributed.all_gather(value) for key, value in out.items()}
        return out

    # Without AutoGraph: the step has no Python control flow on tensors, and
    # converting it and Keras' code took two seconds before the first step.
    @tf.function(autograph=False)
    def train_step(images, labels):
        out = strategy.experimental_local_results(
            strategy.run(replica_step, args=(images, labels)))[0]
        step.assign_add(1)
        out['top1'], out['prec_at_k'] = (tf.reduce_mean(out[k]) for k in ('top1', 'prec_at_k'))
        out['active_count'] = tf.reduce_sum(tf.cast(out['losses'] > 1e-5, tf.float32))
        out['spread'] = loss.embedding_spread(out['dists'], out['pos_mask'] + out['neg_mask'] > 0,
                                              out['emb'], args.metric)
        return out

    def replica_losses_and_gradients(images, labels):
        grads, out = replica_gradients(images, labels)
        if 'centers' in extras:
            grads = grads + [center_gradients(out)]
        context = tf.distribute.get_replica_context()
        return distributed.all_gather(out['losses']) if replicas > 1 else out['losses'], [
            context.all_reduce(tf.distribute.ReduceOp.SUM, g) for g in grads]

    @tf.function(autograph=False)
    def gradients(images, labels):
        return strategy.experimental_local_results(
            strategy.run(replica_losses_and_gradients, args=(images, labels)))[0]

    return train_step, gradients


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # The experiment root's lock is released when training ends, however it ends.
    with contextlib.ExitStack() as cleanup:
        return train(argv, cleanup)


def train(argv, cleanup):
    """main() with `cleanup`, the contextlib.ExitStack that holds the lock."""
    common.setup_logging()

    # Arguments: fresh, or resumed from args.json. Nothing is written before
    # the arguments and the data are known to be usable. One train.py at a
    # time writes to an experiment root: the chief locks an existing root
    # before reading it, and a new one when it creates it.
    given = parser.parse_args(argv)
    chief = distributed.worker_task(given.distribution)[0] == 'chief'
    locked = chief and os.path.isdir(given.experiment_root)
    if locked:
        cleanup.enter_context(experiment.locked_directory(given.experiment_root, 'train.py'))
    args, resuming, changed = experiment.resolve_arguments(parser, argv, chief)
    if resuming:
        experiment.check_stored_paths(args, common.given_arguments(parser, argv))
    check_arguments(args)
    if args.deterministic:
        sequential_ops()
    # The strategy comes before any other TensorFlow work, as multi-worker
    # collectives must be configured at start-up.
    task_type, task_index = distributed.worker_task(args.distribution)
    strategy = distributed.make_strategy(args.distribution)

    # Data.
    pids, fids = common.load_dataset(args.train_set, args.image_root)
    keep = sampler.decodable_mask(fids, args.image_root, args.skip_corrupt_images,
                                  args.loading_threads, log, max_pixels=args.max_image_pixels)
    pids, fids = pids[keep], fids[keep]
    net_input_size = (args.net_input_height, args.net_input_width)
    pre_crop_size = (args.pre_crop_height, args.pre_crop_width)
    sampler.check_enough_identities(pids, args.batch_p, '`{}`'.format(args.train_set))
    if args.detailed_logs and chief:
        detailed_logs.check_space(args.experiment_root, args.train_iterations,
                                  args.batch_p * args.batch_k, args.embedding_dim,
                                  max(len(f.encode('utf-8')) for f in fids))
    # Validation runs on the chief only.
    validate = validation.make_validation(args) if chief else None

    # A seed is chosen once and stored; experiments of the TF1 original have none yet.
    new_seed = args.seed is None
    if new_seed:
        args.seed = secrets.randbelow(2 ** 31)
    log.info('Training using the following parameters:')
    for key, value in sorted(vars(args).items()):
        log.info('%s: %s', key, value)

    # Model, initialised from the seed so that the same seed gives the same run.
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        model, body = build_model(args.model_name, args.head_name, args.embedding_dim,
                                  args.mixed_precision, args.pooling, args.last_stride)
        if strategy.num_replicas_in_sync > 1:
            distributed.synchronize_batch_norm(model)
        extras = auxiliary_heads(args, len(np.unique(pids)), args.embedding_dim)

        # Optimizer, built now so that its slots exist in the step-0 checkpoint.
        learning_rate = LearningRate(args.learning_rate, args.decay_start_iteration,
                                     args.train_iterations, args.lr_schedule,
                                     args.warmup_iterations, args.lr_decay_steps,
                                     args.lr_decay_factor)
        # TF1's Adam epsilon, as the original trained with (Keras defaults to 1e-7).
        optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-8)
        if args.mixed_precision == 'float16':
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(trainable_variables(model, extras))

        # Checkpoint: everything that decides the future of the run.
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
    checkpoint = tf.train.Checkpoint(model=model, body=body, optimizer=optimizer, step=step,
                                     **extras)
    # Other workers of a multi-worker run write to a scratch folder they delete.
    checkpoint_dir = args.experiment_root if chief else os.path.join(
        args.experiment_root, '.{}_{}'.format(task_type, task_index))
    if chief:
        experiment.remove_damaged_index(checkpoint_dir)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=args.keep_checkpoints,
                                         checkpoint_name='checkpoint')
    latest = experiment.newest_checkpoint(args.experiment_root)
    if resuming and chief and not latest:
        experiment.check_checkpoints_not_lost(args.experiment_root)

    def save(number):
        manager.save(checkpoint_number=number)
        if not chief:
            tf.io.gfile.rmtree(checkpoint_dir)

    if latest:
        check_identity_count(latest, len(np.unique(pids)), args.train_set)
        restore(latest, checkpoint, model, body, optimizer, step,
                what='the model {} + {} with embedding_dim {}'.format(
                    args.model_name, args.head_name, args.embedding_dim))
    elif args.initial_checkpoint:
        log.info('Initialising the body from %s', args.initial_checkpoint)
        load_body_weights(args.model_name, body, args.initial_checkpoint)
    check_input_size(model, args)

    # Only now, with the data, the model and its weights known to work, is
    # anything written, so a refused run leaves no arguments behind to poison
    # the corrected rerun.
    if chief:
        # Changed arguments of a resumed run are stored once its first
        # iteration has worked, so that a refused change (out of memory, at
        # once divergent) does not stay to fail the corrected rerun.
        experiment.store_arguments(args, cleanup, locked, rewrite=not resuming or new_seed)
    else:
        common.setup_logging(buffer=False)
    if not latest:
        # The initialisation is stored too, so experiments can be reproduced exactly.
        save(0)
    start_step = int(step.numpy())
    train_step, _ = make_train_step(model, optimizer, step, args, strategy, extras)

    # Validation, on the chief only. The best checkpoint is copied to `best/`,
    # where the regular ones' --keep_checkpoints cannot delete it. Two are
    # kept there so that best.json, written after the copy, always names one
    # that exists.
    forward = inference_function(model)
    best = experiment.read_best(args.experiment_root) if validate else None
    best_manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(args.experiment_root, 'best'), max_to_keep=2,
        checkpoint_name='checkpoint') if validate else None

    def run_validation(current):
        nonlocal best
        start_time = time.time()
        scores = validate(forward)
        with writer.as_default():
            for name, value in scores.items():
                tf.summary.scalar('val/' + name, value, step=current)
        writer.flush()
        improved = best is None or scores['mAP'] > best['mAP']
        log.info('validation at iter %d: mAP %.2f%%, top-1 %.2f%%, top-5 %.2f%% (%.1fs)%s',
                 current, 100 * scores['mAP'], 100 * scores['top1'], 100 * scores['top5'],
                 time.time() - start_time, ', the best so far' if improved else '')
        if improved:
            path = best_manager.save(checkpoint_number=current)
            best = dict(scores, step=current,
                        checkpoint=os.path.relpath(path, args.experiment_root))
            common.write_json(os.path.join(args.experiment_root, 'best.json'), best)

    # Loop.
    if start_step >= args.train_iterations:
        log.info('The experiment already finished its %d iterations.', args.train_iterations)
        return 0
    def make_dataset(context=None):
        # One input pipeline per worker, yielding one piece per local replica.
        shards = context.num_input_pipelines if context else 1
        return sampler.pk_dataset(
            pids, fids, args.image_root, batch_p=args.batch_p, batch_k=args.batch_k,
            net_input_size=net_input_size, pre_crop_size=pre_crop_size,
            flip_augment=args.flip_augment, crop_augment=args.crop_augment, seed=args.seed,
            loading_threads=args.loading_threads, start_step=start_step, num_shards=shards,
            shard_index=context.input_pipeline_id if context else 0,
            splits=strategy.num_replicas_in_sync // shards, antialias=args.antialias,
            accurate_jpeg=args.accurate_jpeg, pad_crop=args.pad_crop,
            erasing=args.random_erasing, erasing_fill=args.erasing_fill)
    if strategy.num_replicas_in_sync > 1:
        batches = iter(strategy.distribute_datasets_from_function(make_dataset))
    else:
        batches = iter(make_dataset())
    batch_size = args.batch_p * args.batch_k
    if args.detailed_logs and chief:
        log_embs, log_loss, log_fids = detailed_logs.open_logs(
            args.experiment_root, args.train_iterations, batch_size, args.embedding_dim,
            max(len(f.encode('utf-8')) for f in fids))
    writer = tf.summary.create_file_writer(args.experiment_root if chief else checkpoint_dir)
    log.info('Starting training from iteration %d.', start_step)
    saved_step = start_step if latest else None
    collapsed_for = 0
    # The workers of a multi-worker run agree each step whether any was interrupted.
    stop = distributed.agreed_stop(strategy) if args.distribution == 'multi_worker' else bool
    with Uninterrupt(log=log) as u:
        for i in range(start_step, args.train_iterations):
            start_time = time.time()
            images, batch_fids, _, labels = next(batches)
            try:
                out = train_step(images, labels)
            except tf.errors.ResourceExhaustedError as e:
                raise common.UserError(
                    'a training batch of {} images of {}x{} does not fit in memory ({}); lower '
                    '--batch_p, --batch_k or the input size.'.format(
                        batch_size, args.net_input_height, args.net_input_width,
                        str(e).strip().splitlines()[0][:200]))
            b_loss = out['losses'].numpy()
            terms = {name: float(np.mean(out[name])) for name in AUXILIARY_LOSSES if name in out}
            elapsed_time = time.time() - start_time
            current = int(step.numpy())
            if not np.all(np.isfinite(b_loss)) or not np.all(np.isfinite(list(terms.values()))):
                raise TrainingDiverged(
                    'the loss became {} at iteration {}; no checkpoint was written for it. '
                    'Rerun with a lower --learning_rate and --override, which resumes from the '
                    'last checkpoint `{}`.'.format(
                        'NaN' if np.isnan(b_loss).any() or np.isnan(list(terms.values())).any()
                        else 'infinite', current,
                        experiment.newest_checkpoint(args.experiment_root)))
            if changed and chief and i == start_step:
                common.write_json(os.path.join(args.experiment_root, 'args.json'), vars(args))
            collapsed_for = collapsed_for + 1 if looks_collapsed(
                float(b_loss.mean()), float(out['spread']), args.margin,
                float(out['prec_at_k']), (args.batch_k - 1) / (batch_size - 1)) else 0
            if args.collapse_patience and collapsed_for == args.collapse_patience:
                log.warning(collapse_warning(collapsed_for, args.margin))
            if chief:
                write_summaries(writer, current, out, learning_rate(current - 1), elapsed_time,
                                args.batch_k, current % args.histogram_every == 0)
            if args.detailed_logs and chief:
                log_embs[i], log_loss[i] = out['emb'].numpy(), b_loss
                log_fids[i] = np.concatenate([t.numpy() for t in
                                              strategy.experimental_local_results(batch_fids)])
            seconds_todo = (args.train_iterations - current) * elapsed_time
            log.info('iter:%6d, loss min|avg|max: %.3f|%.3f|%6.3f, %sbatch-p@%d: %.2f%%, ETA: %s '
                     '(%.2fs/it)', current, b_loss.min(), b_loss.mean(), b_loss.max(),
                     ''.join('{}: {:.3f}, '.format(n, v) for n, v in terms.items()),
                     args.batch_k - 1, 100 * float(out['prec_at_k']),
                     format_eta(seconds_todo), elapsed_time)
            if args.checkpoint_frequency > 0 and current % args.checkpoint_frequency == 0:
                save(current)
                saved_step = current
            if validate and (current % args.val_every == 0 or current == args.train_iterations):
                run_validation(current)
            if stop(u.interrupted):
                log.info('Interrupted on request%s!', '' if u.interrupted else
                         ' of another worker')
                break

        # A final checkpoint, crucial when intermediate storing is disabled or
        # the run was interrupted.
        if saved_step != int(step.numpy()):
            save(int(step.numpy()))
        writer.flush()
        if args.detailed_logs and chief:
            for array in (log_embs, log_loss, log_fids):
                array.flush()
    log.info('Stopped at iteration %d; checkpoint %s.', int(step.numpy()),
             experiment.newest_checkpoint(args.experiment_root))
    return 0


if __name__ == '__main__':
    common.run(main)
