#!/usr/bin/env python3
"""Train a person re-identification embedding with the batch-hard triplet loss.

Rerunning with the same `--experiment_root` resumes the experiment from its
last checkpoint, with the arguments stored in its `args.json`.
"""

import argparse
import contextlib
import sys

import numpy as np

if __package__ in (None, ''):
    # Run from a checkout (`python train.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid.cli import flags, startup
from triplet_reid.experiment import adaptation, optimiser, transformer, video
from triplet_reid.evaluation import metrics
from triplet_reid.experiment import ARCHITECTURE_ARGUMENTS, Experiment, StepSettings
from triplet_reid.excluders import EXCLUDER_CHOICES
from triplet_reid.heads import HEAD_CHOICES
from triplet_reid.nets import LAST_STRIDE_NETS, NET_CHOICES, PADDING_NETS, PADDINGS


parser = argparse.ArgumentParser(
    allow_abbrev=False,
    description='Train a ReID network.',
    epilog='Rerunning with an existing --experiment_root resumes that experiment. '
           '@FILE reads flags from a file (a recipe: {} from recipes/; later flags override '
           'its own).'.format(', '.join('@' + name for name in flags.recipe_names())))

experiment_flags = parser.add_argument_group(
    'experiment', 'Where the experiment lives, and resuming it.')

experiment_flags.add_argument(
    '--experiment_root', required=True, type=flags.writeable_directory,
    help='Location used to store checkpoints and dumped data.')

experiment_flags.add_argument(
    '--resume', action='store_true', default=False,
    help='Resume the experiment in --experiment_root. Rerunning with an existing '
         'experiment root resumes anyway; with this flag a missing `args.json` is an error. '
         'All other arguments are taken from the stored `args.json`.')

experiment_flags.add_argument(
    '--override', action='store_true', default=False,
    help='When resuming, use the arguments given on the command line instead of the stored '
         'ones; each change is logged and stored in args.json. For example, continue a '
         'finished experiment with a larger --train_iterations, or rerun with a lower '
         '--learning_rate after the loss became NaN. The architecture ({}) cannot change.'.format(
             ', '.join('--' + a for a in ARCHITECTURE_ARGUMENTS)))

data_flags = parser.add_argument_group(
    'data', 'The training images and how they are read.')

data_flags.add_argument(
    '--train_set', action=flags.OneOrMore, metavar='CSV',
    help='Path to the train_set csv file (rows `identity,relative/path`, no header). Give '
         'several (`--train_set a.csv b.csv`, or the flag repeated) to train on their union: '
         'each set\'s identities are kept apart (set 1\'s `0002` is not set 2\'s), and the '
         'P×K batches draw from all identities alike.')

data_flags.add_argument(
    '--image_root', type=flags.readable_directory, action=flags.OneOrMore, metavar='DIR',
    help='Path that will be pre-pended to the filenames in the train_set csv. With several '
         '--train_set, one folder for all of them or one per set, in the same order.')

data_flags.add_argument(
    '--batch_p', default=StepSettings.batch_p, type=flags.positive_int,
    help='The number P used in the PK-batches: identities per batch.')

data_flags.add_argument(
    '--batch_k', default=StepSettings.batch_k, type=flags.positive_int,
    help='The number K used in the PK-batches: images per identity (at least 2).')

data_flags.add_argument(
    '--net_input_height', default=Experiment.net_input_height, type=flags.positive_int,
    help='Height of the input directly fed into the network.')

data_flags.add_argument(
    '--net_input_width', default=Experiment.net_input_width, type=flags.positive_int,
    help='Width of the input directly fed into the network.')

data_flags.add_argument(
    '--pre_crop_height', default=Experiment.pre_crop_height, type=flags.positive_int,
    help='Height used to resize a loaded image; ignored without crop augmentation.')

data_flags.add_argument(
    '--pre_crop_width', default=Experiment.pre_crop_width, type=flags.positive_int,
    help='Width used to resize a loaded image; ignored without crop augmentation.')

data_flags.add_argument(
    '--antialias', default=Experiment.antialias, action=argparse.BooleanOptionalAction,
    help='Resize images with an antialiasing filter when shrinking them, as PIL does. Stored '
         'with the experiment: embed.py, validation and export.py resize as training did; '
         'experiments from before this flag keep resizing without (--no-antialias).')

data_flags.add_argument(
    '--accurate_jpeg', default=Experiment.accurate_jpeg, action=argparse.BooleanOptionalAction,
    help='Decode JPEGs with the accurate integer DCT, as PIL and OpenCV do, rather than '
         'TensorFlow\'s fast default (about one grey level off per pixel). Stored with the '
         'experiment like --antialias; experiments from before this flag keep the fast DCT.')

data_flags.add_argument(
    '--loading_threads', default=8, type=flags.positive_int,
    help='Number of threads used for parallel loading.')

data_flags.add_argument(
    '--skip_corrupt_images', action='store_true', default=False,
    help='Train without images that cannot be decoded (corrupt, truncated, not an image), '
         'with a warning and their count; by default they stop training before it starts.')

data_flags.add_argument(
    '--max_image_pixels', default=flags.MAX_IMAGE_PIXELS, type=flags.positive_int,
    help='Refuse images whose headers declare more pixels than this (or skip them with '
         '--skip_corrupt_images) before decoding them, as a small file can hold a huge picture '
         'that would exhaust memory.')

model_flags = parser.add_argument_group(
    'model', 'The network: its body, head and starting weights.')

model_flags.add_argument(
    '--model_name', default=Experiment.model_name, choices=NET_CHOICES,
    help='Name of the model to use.')

model_flags.add_argument(
    '--head_name', default=Experiment.head_name, choices=HEAD_CHOICES,
    help='Name of the head to use.')

model_flags.add_argument(
    '--embedding_dim', default=Experiment.embedding_dim, type=flags.positive_int,
    help='Dimensionality of the embedding space.')

model_flags.add_argument(
    '--pooling', default=Experiment.pooling, choices=flags.POOLINGS,
    help='The global pooling of the body\'s feature map: average (the original), max, or '
         'GeM (generalised mean with a learnable exponent, initially 3).')

model_flags.add_argument(
    '--last_stride', default=Experiment.last_stride, type=int, choices=(1, 2),
    help='The stride of the body\'s last stage. 1 (BoT) doubles the height and width of '
         'the final feature map, for finer features at more compute; pretrained weights '
         'still load. For {}.'.format(', '.join(LAST_STRIDE_NETS)))

model_flags.add_argument(
    '--net_padding', default=Experiment.net_padding, choices=PADDINGS,
    help='How the strided stem convolution and max-pool of {} pad: `torch` on every side '
         'alike, as torchreid (whose trained weights need it), or `keras`, Keras\' \'same\' '
         '(the extra pixel at the bottom and right only), as experiments before this flag. '
         'The other nets pad as the reference they follow does.'.format(
             ', '.join(PADDING_NETS)))

model_flags.add_argument(
    '--initial_checkpoint', default=None,
    help='Pretrained weights for the network body (the head starts fresh): a TF-slim or TF1 '
         'checkpoint prefix (such as resnet_v1_50.ckpt), a Keras weights file (.weights.h5), '
         '`imagenet` for the Keras nets, or a TF2 checkpoint prefix or experiment root of '
         'this project (such as another experiment, or a torchreid model imported with '
         'import_model.py).')

loss_flags = parser.add_argument_group(
    'loss', 'The metric learning loss, and the identity and center losses beside it.')

loss_flags.add_argument(
    '--margin', default=StepSettings.margin, type=flags.margin,
    help='What margin to use: a float value for hard-margin, "soft" for '
         'soft-margin, or no margin if "none".')

loss_flags.add_argument(
    '--metric', default=StepSettings.metric, choices=metrics.METRICS,
    help='Which metric to use for the distance between embeddings.')

loss_flags.add_argument(
    '--loss', default=StepSettings.loss, choices=flags.LOSSES,
    help='The triplet loss variant: `batch_hard` (the hardest positive and negative of '
         'each anchor), `batch_all` (every triplet, averaged over the non-zero terms), '
         '`batch_all_mean` (every triplet, averaged over all), `batch_sample` (a positive and '
         'a negative drawn by their distances) or `weighted` (softmax-weighted positives and '
         'negatives). docs/training.md says which to use when.')

loss_flags.add_argument(
    '--id_loss_weight', default=StepSettings.id_loss_weight, type=flags.float_between(0, 100),
    help='Add a softmax cross-entropy identity loss over the training identities, with this '
         'weight, on a bias-free classifier of the embedding (after the batch norm of the '
         'bnneck heads, before the L2 normalisation of the _normalize heads). The classifier is '
         'checkpointed but not exported. BoT: 1. '
         '0: off, as the original. Also the usual remedy when training from scratch collapses.')

loss_flags.add_argument(
    '--id_loss', default=StepSettings.id_loss, choices=flags.ID_LOSSES,
    help='The identity loss of --id_loss_weight: `softmax` (BoT), or a margin softmax over the '
         'cosines between the embedding and the classifier\'s weights: `cosface` (Wang et al. '
         '2018), `arcface` (Deng et al. 2019) or `circle` (Sun et al. 2020, fast-reid\'s '
         'CircleSoftmax), with --id_scale and --id_margin.')

loss_flags.add_argument(
    '--id_scale', default=StepSettings.id_scale,
    type=flags.float_between(0, 1000, include_lower=False),
    help='The scale s of the margin softmaxes (--id_loss cosface, arcface, circle).')

loss_flags.add_argument(
    '--id_margin', default=StepSettings.id_margin, type=flags.float_between(0, 1),
    help='The margin m of the margin softmaxes; the paper\'s by default (cosface 0.35, '
         'arcface 0.5, circle 0.25).')

loss_flags.add_argument(
    '--label_smoothing', default=StepSettings.label_smoothing, type=flags.unit_float,
    help='Label smoothing of the identity loss (Szegedy et al. 2016): the target gives 1 - e + '
         'e/C to the true identity and e/C to each of the C others. Only used with '
         '--id_loss_weight.')

loss_flags.add_argument(
    '--center_loss_weight', default=StepSettings.center_loss_weight,
    type=flags.float_between(0, 100),
    help='Add the center loss (Wen et al. 2016) with this weight: the squared distance of each '
         'embedding (before the batch norm of bnneck) to a center of its identity. The centers '
         'learn by plain SGD at --center_learning_rate from the unweighted loss, as in BoT. '
         'BoT: 5e-4. 0: off.')

loss_flags.add_argument(
    '--center_learning_rate', default=StepSettings.center_learning_rate,
    type=flags.float_between(0, 1, include_lower=False),
    help='The SGD learning rate of the centers of --center_loss_weight (BoT: 0.5).')

optimiser_flags = parser.add_argument_group(
    'optimiser', 'The optimiser, its learning rate and schedule, and the length of training.')

optimiser_flags.add_argument(
    '--learning_rate', default=3e-4, type=flags.float_between(0, 10, include_lower=False),
    help='The initial value of the learning-rate, before it kicks in.')

optimiser_flags.add_argument(
    '--train_iterations', default=25000, type=flags.positive_int,
    help='Number of training iterations.')

optimiser_flags.add_argument(
    '--decay_start_iteration', default=15000, type=int,
    help='At which iteration the learning-rate decay should kick-in. '
         'Set to -1 to disable decay completely.')

optimiser_flags.add_argument(
    '--lr_schedule', default='exponential', choices=flags.LR_SCHEDULES,
    help='`exponential`: the original\'s decay from --decay_start_iteration down to 0.001x at '
         'the last iteration. `cosine`: half a cosine from --decay_start_iteration down to 0. '
         '`step`: multiply by --lr_decay_factor at each of --lr_decay_steps.')

optimiser_flags.add_argument(
    '--lr_decay_steps', default=[], type=flags.positive_int, nargs='+',
    help='The iterations at which `--lr_schedule step` multiplies the learning rate by '
         '--lr_decay_factor (BoT: 40 and 70 of 120 epochs).')

optimiser_flags.add_argument(
    '--lr_decay_factor', default=0.1, type=flags.float_between(0, 1, include_lower=False),
    help='The factor of each step of `--lr_schedule step`.')

optimiser_flags.add_argument(
    '--warmup_iterations', default=0, type=flags.nonnegative_int,
    help='Raise the learning rate linearly from 1%% of the schedule\'s value to all of it '
         'over this many first iterations (BoT: 10 epochs). 0: no warm-up, as the original.')

optimiser_flags.add_argument(
    '--weight_decay', default=StepSettings.weight_decay, type=flags.float_between(0, 1),
    help='L2 regularisation of every trainable weight, coupled as in BoT\'s Adam: the loss '
         'gains weight_decay/2 · ‖w‖², so each gradient gains weight_decay · w, which Adam '
         'then normalises (unlike the decoupled AdamW). BoT: 5e-4. 0: none, as the original.')

augmentation_flags = parser.add_argument_group(
    'augmentation', 'What training changes in each image.')

augmentation_flags.add_argument(
    '--flip_augment', action=argparse.BooleanOptionalAction, default=False,
    help='When this flag is provided, flip augmentation is performed (--no-flip_augment '
         'turns off a recipe\'s).')

augmentation_flags.add_argument(
    '--crop_augment', action=argparse.BooleanOptionalAction, default=False,
    help='When this flag is provided, crop augmentation is performed: images are resized '
         'to the pre-crop size and a random crop of the net input size is taken.')

augmentation_flags.add_argument(
    '--pad_crop', default=0, type=flags.nonnegative_int,
    help='Pad every training image with this many black pixels on each side and take a random '
         'crop of the net input size (BoT: 10 at 256x128), an alternative to --crop_augment. '
         '0: off.')

augmentation_flags.add_argument(
    '--random_erasing', default=0.0, type=flags.unit_float,
    help='The probability of random erasing (Zhong et al. 2020) of each training image: a '
         'rectangle of 2-40%% of its area, aspect 0.3-3.3, is filled (see --erasing_fill). '
         'BoT: 0.5. 0: off.')

augmentation_flags.add_argument(
    '--erasing_fill', default='mean', choices=flags.ERASING_FILLS,
    help='What --random_erasing fills with: the ImageNet mean colour or uniform noise.')

validation_flags = parser.add_argument_group(
    'validation', 'Scores on held-out identities during training, and the collapse warning.')

validation_flags.add_argument(
    '--val_query', default=None,
    help='Validate during training: the query CSV (paths relative to --image_root, the first '
         'one when there are several). Every '
         '--val_every iterations the network embeds it and --val_gallery and is evaluated; '
         'val/mAP, val/top1 and val/top5 go to TensorBoard and the log, and the best '
         'checkpoint so far is kept in `best/` (see best.json).')

validation_flags.add_argument(
    '--val_gallery', default=None,
    help='The gallery CSV of validation; needs --val_query.')

validation_flags.add_argument(
    '--val_excluder', default=None, choices=EXCLUDER_CHOICES,
    help='The excluder of validation, as evaluate.py\'s --excluder; needs --val_query.')

validation_flags.add_argument(
    '--val_camera_regex', default=None,
    help='With --val_excluder folders: the regular expression whose first group, searched in '
         'each file name, is its camera (as evaluate.py\'s --camera_regex); same-camera '
         'matches of the same identity are then ignored.')

validation_flags.add_argument(
    '--val_every', default=1000, type=flags.positive_int,
    help='Validate every this many iterations, and after the last one.')

validation_flags.add_argument(
    '--collapse_patience', default=100, type=flags.nonnegative_int,
    help='Warn when training has looked collapsed for this many iterations in a row: the loss '
         'within 10%% of its value for equal distances (ln 2 for the soft margin) and the '
         'embeddings closer to each other than 10%% of their distance from the origin. 0 turns '
         'the warning off.')

checkpoints_flags = parser.add_argument_group(
    'checkpoints', 'Checkpoints and logs in the experiment root.')

checkpoints_flags.add_argument(
    '--checkpoint_frequency', default=1000, type=flags.nonnegative_int,
    help='After how many iterations a checkpoint is stored. Set this to 0 to '
         'disable intermediate storing. This will result in only one final '
         'checkpoint.')

checkpoints_flags.add_argument(
    '--keep_checkpoints', default=None, type=flags.positive_int,
    help='Keep only the newest N checkpoints; all are kept by default, as the original.')

checkpoints_flags.add_argument(
    '--detailed_logs', action='store_true', default=False,
    help='Store very detailed logs of the training in addition to TensorBoard'
         ' summaries. These are mem-mapped numpy files containing the'
         ' embeddings, losses and FIDs seen in each batch during training.'
         ' Everything can be re-constructed and analyzed that way.')

checkpoints_flags.add_argument(
    '--histogram_every', default=10, type=flags.positive_int,
    help='Write the TensorBoard histograms (loss_distribution, embedding_dists, …) every this '
         'many iterations; the scalars are written every iteration. 1 writes them every '
         'iteration, as the original did, at a cost noticeable with small nets.')

performance_flags = parser.add_argument_group(
    'performance', 'Speed and reproducibility.')

performance_flags.add_argument(
    '--seed', default=None, type=flags.seed,
    help='Seed of the sampler and the augmentation: two runs with the same seed see the '
         'same batches. Chosen at random (and stored in args.json) when not given.')

performance_flags.add_argument(
    '--deterministic', action='store_true', default=False,
    help='Use deterministic TensorFlow kernels and run operations one at a time, so that a '
         'run with --seed gives bit-identical weights however often it is interrupted and '
         'resumed. Slower.')

performance_flags.add_argument(
    '--mixed_precision', default='off', choices=('off', 'float16', 'bfloat16'),
    help='Compute the network in float16 (with loss scaling) or bfloat16, keeping weights, '
         'distances and losses in float32. Fast on GPUs with tensor cores (bfloat16 on '
         'Ampere and newer); slow on most CPUs.')

performance_flags.add_argument(
    '--xla', action=argparse.BooleanOptionalAction, default=StepSettings.xla,
    help='Compile the forward and backward pass with XLA (jit_compile). Usually faster on '
         'GPUs; the first step takes longer.')

distribution_flags = parser.add_argument_group(
    'distribution', 'Several GPUs or machines.')

distribution_flags.add_argument(
    '--distribution', default='none', choices=('none', 'mirrored', 'multi_worker'),
    help='`mirrored`: split each batch over the visible GPUs (MirroredStrategy). '
         '`multi_worker`: over several machines configured by TF_CONFIG '
         '(MultiWorkerMirroredStrategy). P must be a multiple of the number of replicas; each '
         'replica gets whole identities.')

distribution_flags.add_argument(
    '--per_replica_mining', action='store_true', default=StepSettings.per_replica_mining,
    help='With several replicas, mine hard positives and negatives within each replica\'s '
         'part of the batch only. By default the embeddings of all replicas are gathered so '
         'every anchor sees the whole P×K batch, as on a single device.')

adaptation.add_flags(parser, StepSettings, loss_flags)
video.add_flags(parser)
transformer.add_flags(model_flags)
optimiser.add_flags(optimiser_flags)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # The experiment root's lock is released when training ends, however it ends.
    with contextlib.ExitStack() as cleanup:
        return train(argv, cleanup)


def train(argv, cleanup):
    """main() with `cleanup`, the contextlib.ExitStack that holds the lock."""
    cli.setup_logging()

    # Arguments: fresh, or resumed from args.json. Nothing is written before
    # the arguments and the data are known to be usable. One train.py at a
    # time writes to an experiment root: the chief locks it before reading it
    # (creating a new one, which a refused run removes again).
    # A recipe is a file of flags (`@recipes/trinet.args`, or `@trinet`).
    argv = flags.expand_argument_files(argv)
    given = parser.parse_args(argv)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    startup.quiet_tensorflow()
    from triplet_reid.training import distributed
    from triplet_reid import experiment
    from triplet_reid import training
    import triplet_reid.training.checks, triplet_reid.training.data, triplet_reid.training.run  # noqa: E401,F401

    chief = distributed.worker_task(given.distribution)[0] == 'chief'
    if chief:
        experiment.lock_root(given.experiment_root, cleanup)
    args, resuming, changed = experiment.resolve_arguments(parser, argv, chief)
    typed = flags.given_arguments(parser, argv)
    if resuming:
        experiment.check_stored_paths(args, typed)
    training.checks.check_arguments(args, typed)
    if args.deterministic:
        training.run.sequential_ops()
    # The strategy comes before any other TensorFlow work, as multi-worker
    # collectives must be configured at start-up.
    strategy = distributed.make_strategy(args.distribution)

    # Data, and validation (on the chief only).
    data = training.data.load_data(args, chief)
    validate = training.run.make_validation(args, chief)
    new_seed = training.run.choose_seed(args)

    # Model, optimizer and checkpoint.
    num_ids = len(np.unique(data.pids))
    run = training.run.build_run(args, strategy, num_ids, chief)
    latest = training.run.restore_or_initialise(run, resuming, num_ids)
    # With --pseudo_labels, the first round's clusters are made now, before any writing.
    data, rounds = training.run.begin_rounds(run, data)

    # Only now, with the data, the model and its weights known to work, is
    # anything written, so a refused run leaves no arguments behind to poison
    # the corrected rerun. Changed arguments of a resumed run are stored once
    # its first iteration has worked (see training.run.loop), for the same reason.
    if chief:
        experiment.store_arguments(args, rewrite=not resuming or new_seed)
    else:
        cli.setup_logging(buffer=False)
    if not latest:
        # The initialisation is stored too, so experiments can be reproduced exactly.
        training.run.save(run, 0)

    # Loop.
    return training.run.loop(run, data, validate, changed, latest, rounds)


def command():
    """`reid-train`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
