"""An experiment folder: what it is, its stored arguments, lock and records.

Everything about the experiment root that train.py, embed.py, search.py and
export.py share: reading, resolving and writing `args.json`, the root's
lock, the leftovers of killed runs, and validation's `best.json`; its
checkpoints are `experiment/checkpoints.py`'s.
"""

import contextlib
import dataclasses
import fcntl
import functools
import logging
import math
import operator
import os
import re
import reprlib
import shutil

from triplet_reid import cli, nets
from triplet_reid.cli import flags, UserError
from triplet_reid.storage import files
from triplet_reid.storage.json_files import read_json
from triplet_reid.cli.flags import POOLINGS

log = logging.getLogger('experiment')


def architecture(default):
    """A field of `Experiment` that the weights depend on, which resuming
    never changes."""
    return dataclasses.field(default=default, metadata={'architecture': True})


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What an experiment is: its network and how images become its input.

    The fields are train.py's flags of the same names, as args.json stores
    them, and their defaults are train.py's (its parser reads them from
    here). `Experiment.of` builds the record once from train.py's arguments
    or an args.json dict (`read_args` has filled in `LEGACY_ARGUMENTS`);
    training, embedding, export, the memory checks and the model zoo read it.
    """
    model_name: str = architecture('resnet_v1_50')
    head_name: str = architecture('fc1024')
    embedding_dim: int = architecture(128)
    pooling: str = architecture('avg')
    last_stride: int = architecture(2)
    net_padding: str = architecture('torch')
    net_input_height: int = 256
    net_input_width: int = 128
    pre_crop_height: int = 288
    pre_crop_width: int = 144
    antialias: bool = True
    accurate_jpeg: bool = True
    # Video training's temporal aggregation (None: an experiment on images).
    temporal_pooling: object = architecture(None)
    temporal_position: str = architecture('embedding')
    # A vision transformer's patch stride, stochastic depth and the parts of
    # TransReID's jigsaw patch module (nets.TRANSFORMER_NETS; 0 parts: none).
    patch_stride: int = architecture(16)
    drop_path_rate: float = 0.1
    jpm: int = architecture(0)
    # TransReID's side information embedding: the names of the cameras whose
    # embeddings it learns, in the order of its table (None: none), and the
    # weight it adds them with (TransReID's SIE_COE).
    sie_cameras: object = architecture(None)
    sie_weight: float = architecture(3.0)

    @classmethod
    def of(cls, args):
        """The record of train.py's arguments (a Namespace) or of an
        args.json dict; a field they lack keeps its default."""
        get = args.get if isinstance(args, dict) else functools.partial(getattr, args)
        return cls(**{field.name: get(field.name, field.default)
                      for field in dataclasses.fields(cls)})

    @property
    def net_input_size(self):
        """(height, width) of the images the net is fed."""
        return self.net_input_height, self.net_input_width

    @property
    def pre_crop_size(self):
        """(height, width) that crop augmentation resizes images to first."""
        return self.pre_crop_height, self.pre_crop_width

    @property
    def sie_count(self):
        """The rows of the side information embedding: its cameras (0: none)."""
        return len(self.sie_cameras or ())

    def crops_fit(self):
        """Whether crops of the net input size fit in the pre-crop size."""
        return all(map(operator.ge, self.pre_crop_size, self.net_input_size))


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """How an experiment trains: the batch, the losses and the step's
    options that `training.step.make_train_step` and `auxiliary_heads`
    read. The fields are train.py's flags of the same names, whose defaults
    train.py reads from here (but for --seed, which it draws when not
    given); callers without train.py's command line, such as the
    benchmarks, make the record, and train.py passes its whole arguments,
    which hold the same names."""
    batch_p: int = 32
    batch_k: int = 4
    seed: int = 0
    loss: str = 'batch_hard'
    metric: str = 'euclidean'
    margin: object = 'soft'
    id_loss_weight: float = 0.0
    id_loss: str = 'softmax'
    id_scale: float = 64.0
    id_margin: object = None
    label_smoothing: float = 0.1
    center_loss_weight: float = 0.0
    center_learning_rate: float = 0.5
    triplet_loss_weight: float = 1.0
    memory_loss_weight: float = 0.0
    memory_temperature: float = 0.05
    memory_momentum: float = 0.1
    camera_proxies: bool = False
    inter_camera_weight: float = 0.5
    proxy_negatives: int = 50
    weight_decay: float = 0.0
    optimizer: str = 'adam'
    xla: bool = False
    per_replica_mining: bool = False


# What a checkpoint's variables depend on: --override cannot change these.
ARCHITECTURE_ARGUMENTS = tuple(field.name for field in dataclasses.fields(Experiment)
                               if field.metadata.get('architecture'))


# Arguments that changed what an experiment computes after experiments
# without them were written: the value such an experiment used. Filled in
# when reading its args.json, so that it keeps training and embedding as it
# began (a new experiment stores the new defaults).
LEGACY_ARGUMENTS = {
    # Before --antialias, images were resized without antialiasing.
    'antialias': False,
    # Before --accurate_jpeg, JPEGs were decoded with TensorFlow's fast DCT.
    'accurate_jpeg': False,
    # The architecture before --pooling and --last_stride.
    'pooling': 'avg',
    'last_stride': 2,
    # Before --net_padding, OSNet padded its stem as Keras' 'same' does.
    'net_padding': 'keras',
}


# The stored arguments whose text may look like a number: paths and digests.
TEXT_ARGUMENTS = ('experiment_root', 'train_set', 'image_root', 'val_query', 'val_gallery',
                  'initial_checkpoint', 'imported_from', 'imported_sha256')


def check_choices(stored, args_file, choices):
    """Refuses a stored argument outside its choices.

    Args:
        stored (dict): arguments read from `args_file`.
        choices: pairs (argument name, tuple of the values it may take).

    Raises:
        UserError naming the file, the argument and the choices.
    """
    for key, allowed in choices:
        if key in stored and stored[key] not in allowed:
            raise UserError('`{}` names {} `{}`, which does not exist; choose one of '
                            '{}.'.format(args_file, key, stored[key],
                                         ', '.join(map(str, allowed))))


def trained_args(experiment_root):
    """`read_args` of an experiment root that must have been trained (or
    imported): a root without `args.json` is refused."""
    stored = read_args(experiment_root)
    if stored is None:
        raise UserError('`args.json` could not be found in `{}`; is it an experiment '
                        'root written by train.py?'.format(experiment_root))
    return stored


def read_args(experiment_root):
    """The training arguments stored in the experiment's `args.json`, with
    `LEGACY_ARGUMENTS` filled in where it lacks them.

    Returns:
        A dict, or None when the root holds no `args.json`.

    Raises:
        UserError when the file is corrupt, not a JSON object, or holds a value
        that embedding cannot use. The net, head and padding are checked
        against their plug-ins by `models.build.check_architecture`, which
        sits above them.
    """
    args_file = os.path.join(experiment_root, 'args.json')
    if not os.path.isfile(args_file):
        return None
    stored = read_json(args_file, 'fix it or start a new experiment root')
    # train.py stores numbers as JSON numbers: a number in quotes is a hand edit
    # that argparse's types would turn into a number without a word.
    for key, value in stored.items():
        if isinstance(value, str) and key not in TEXT_ARGUMENTS and re.fullmatch(
                r'\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*|\s*[-+]?(inf|nan)\s*', value,
                re.IGNORECASE):
            raise UserError('`{}` stores `{}` = "{}", a number in quotes, where train.py writes '
                            'a number; write it without the quotes, or start a new experiment '
                            'root.'.format(args_file, key, value))
    check_choices(stored, args_file, (('pooling', POOLINGS), ('last_stride', (1, 2))))
    # What embedding needs (the Experiment record's numbers and switches),
    # checked here; train.py checks every argument it knows.
    for field in dataclasses.fields(Experiment):
        key, kind = field.name, field.type
        if kind not in (int, bool):
            continue
        # A count whose default is 0 (--jpm's parts) may be 0; the sizes may not.
        least = 0 if kind is int and field.default == 0 else 1
        value = stored.get(key, LEGACY_ARGUMENTS.get(key, field.default if least == 0 else 1))
        if type(value) is not kind or (kind is int and value < least):
            raise UserError('`{}` stores `{}` = `{}`, which is not a valid value (a {} was '
                            'expected); fix it or start a new experiment root.'.format(
                                args_file, key, value, 'true or false' if kind is bool else
                                'positive integer' if least else 'whole number from 0'))
    check_sie(stored, args_file)
    for key in ('train_set', 'image_root'):
        value = stored.get(key)
        if value is not None and not (isinstance(value, str) or isinstance(value, list) and all(
                isinstance(item, str) for item in value)):
            raise UserError('`{}` stores `{}` = `{}`, which is not a valid value (a path or a '
                            'list of paths was expected); fix it or start a new experiment '
                            'root.'.format(args_file, key, value))
    return dict(LEGACY_ARGUMENTS, **stored)


def check_sie(stored, args_file):
    """Refuses a stored side information embedding that no run writes: its
    cameras other than a list of distinct names (at most
    `nets.MAX_SIE_CAMERAS`), its weight other than a finite number."""
    cameras, weight = stored.get('sie_cameras'), stored.get('sie_weight', 3.0)
    if cameras is not None and not (
            isinstance(cameras, list) and 0 < len(cameras) <= nets.MAX_SIE_CAMERAS and
            all(isinstance(c, str) and c for c in cameras) and len(set(cameras)) == len(cameras)):
        raise UserError('`{}` stores `sie_cameras` = `{}`, which is not a valid value (a list of '
                        'at most {} distinct camera names was expected); fix it or start a new '
                        'experiment root.'.format(args_file, reprlib.repr(cameras),
                                                  nets.MAX_SIE_CAMERAS))
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(
            weight):
        raise UserError('`{}` stores `sie_weight` = `{}`, which is not a valid value (a number '
                        'was expected); fix it or start a new experiment root.'.format(
                            args_file, reprlib.repr(weight)))


LOCK_FILE = '.lock'


@contextlib.contextmanager
def locked_directory(directory, program):
    """Holds an exclusive lock on `directory` (through its file `.lock`, which
    names the holder's process id) until the block ends. The operating system
    releases it when the process dies, so a killed run leaves no stale lock.

    Raises:
        UserError when another process holds it.
    """
    path = os.path.join(directory, LOCK_FILE)
    try:
        handle = open(path, 'a+')
    except OSError as e:
        raise UserError('cannot lock the experiment root `{}`: {}.'.format(directory, e))
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or 'unknown'
            raise UserError('the experiment root `{}` is in use by another {} (process {}); '
                            'wait for it to end or stop it, then rerun.'.format(
                                directory, program, holder))
        handle.seek(0)
        handle.truncate()
        handle.write('{}\n'.format(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def read_best(experiment_root):
    """The contents of best.json, or None before the first validation."""
    path = os.path.join(experiment_root, 'best.json')
    if not os.path.isfile(path):
        return None
    remedy = 'delete it to start the record of the best checkpoint afresh'
    best = read_json(path, remedy)
    mean_ap = best.get('mAP')
    if isinstance(mean_ap, bool) or not isinstance(mean_ap, (int, float)) or \
            not 0 <= mean_ap <= 1:
        raise UserError('`{}` is corrupt (its mAP is `{}`, not a number from 0 to 1); '
                        '{}.'.format(path, mean_ap, remedy))
    return best


VALIDATION_ARGUMENTS = ('val_query', 'val_gallery', 'val_excluder', 'val_camera_regex',
                        'val_every')


def resolve_arguments(parser, argv, chief):
    """Parses `argv` with train.py's `parser` and, when the experiment root
    holds `args.json`, takes the stored arguments instead, warning about
    every given one that differs. `chief` says whether this process is the
    one that writes the experiment root (see `distributed.worker_task`).

    The validation arguments are the exception: given ones win, since they
    change what is watched and not what is trained.

    Returns:
        (args, resuming, changed) where `resuming` says whether args.json was
        loaded and `changed` whether it needs writing again.
    """
    args = parser.parse_args(argv)
    stored = read_args(args.experiment_root)
    if stored is not None and stored.get('imported_from'):
        raise UserError('`{}` holds a model imported from `{}` (import_model.py), not a run of '
                        'train.py to resume; fine-tune it in a new experiment root with '
                        '--initial_checkpoint {}.'.format(args.experiment_root,
                                                          stored['imported_from'],
                                                          args.experiment_root))
    if stored is None:
        if args.resume:
            raise UserError('--resume was given but `{}` does not exist.'.format(
                os.path.join(args.experiment_root, 'args.json')))
        # Other workers may find the chief's first files already there.
        if chief and os.path.isdir(args.experiment_root) and set(
                os.listdir(args.experiment_root)) - {LOCK_FILE}:
            raise UserError(
                'the experiment root `{}` is not empty and holds no args.json, so it is not an '
                'experiment of this project; choose an empty or new folder.'.format(
                    args.experiment_root))
        return args, False, False

    flags.check_stored_arguments(parser, stored, os.path.join(args.experiment_root,
                                                              'args.json'))
    given = flags.given_arguments(parser, argv)
    changed = False
    for key, value in vars(args).items():
        if key in ('resume', 'experiment_root', 'override'):
            continue
        if key in VALIDATION_ARGUMENTS and key in given:
            changed |= stored.get(key) != value
            continue
        if key not in stored:
            log.warning('A new argument was added since the last run: `%s`. Using the new '
                        'value: `%s`.', key, value)
        elif key in given and stored[key] != value and args.override:
            if key in ARCHITECTURE_ARGUMENTS:
                raise UserError(
                    '--override cannot change `{}` (stored: `{}`): the checkpoints hold that '
                    'network. Start a new experiment root, with --initial_checkpoint to reuse '
                    'the body.'.format(key, stored[key]))
            log.warning('Overriding the stored `%s`: `%s` becomes `%s` (--override).', key,
                        stored[key], value)
            changed = True
        elif key in given and stored[key] != value:
            log.warning('For the argument `%s` we are using the stored value `%s`. The '
                        'provided value was `%s` (%s).', key, stored[key], value,
                        'the checkpoints hold that network; a new experiment root can change '
                        'it' if key in ARCHITECTURE_ARGUMENTS else '--override uses it instead')
            setattr(args, key, stored[key])
        else:
            setattr(args, key, stored[key])
    return args, True, changed


# The stored arguments that are paths, relative to the folder train.py first
# ran in when given so.
PATH_ARGUMENTS = ('train_set', 'image_root', 'val_query', 'val_gallery', 'initial_checkpoint')


def check_stored_paths(args, given):
    """Refuses stored relative paths that do not exist from the current
    folder, saying what they are relative to (the folder of the first run)."""
    # TensorFlow's file system also finds checkpoints on gs:// and the like;
    # imported here, so that train.py reads the Experiment record before it.
    import tensorflow as tf
    for key in PATH_ARGUMENTS:
        for path in flags.as_list(getattr(args, key, None)):
            if key in given or not path or os.path.isabs(path) or path == 'imagenet' or \
                    os.path.exists(path) or tf.io.gfile.exists(path + '.index'):
                continue
            raise UserError(
                '`{}` stores --{} `{}`, a path relative to the folder train.py first ran in, and '
                'it does not exist from here (`{}`). Run from that folder, or give its new place '
                'with --{} and --override.'.format(os.path.join(args.experiment_root, 'args.json'),
                                                   key, path, os.getcwd(), key))


# What a train.py killed while saving leaves behind: TensorFlow's folder of
# checkpoint shards and temporary `checkpoint` index, and the temporary files
# of files.write_json.
LEFTOVERS = re.compile(r'checkpoint-\d+_temp|checkpoint\.tmp[0-9a-f]{32}|\.(args|best)\.json\..+')


def remove_leftovers(experiment_root):
    """Removes the half-written files of killed runs from the experiment root
    and its `best/` folder; only train.py writes them, and it holds the lock."""
    for folder in (experiment_root, os.path.join(experiment_root, 'best')):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if LEFTOVERS.fullmatch(name):
                log.info('Removing %s, left by a run that was stopped while writing it.', path)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)


def write_args(args):
    """Writes the experiment's `args.json` (atomically) from train.py's arguments."""
    files.write_json(os.path.join(args.experiment_root, 'args.json'), vars(args),
                     experiment=True)


def lock_root(experiment_root, cleanup):
    """Locks the experiment root (see `locked_directory`) until `cleanup`, a
    contextlib.ExitStack, closes, creating a new root first, so that a second
    train.py is refused at once, before it reads the data or builds a model
    (TensorFlow itself is imported before, for a few seconds). A new root that
    still holds nothing but the lock when `cleanup` closes (the run was
    refused before it wrote anything) is removed again.

    Raises:
        UserError when another process holds the lock or the root cannot be
        created.
    """
    try:
        os.makedirs(experiment_root)
        created = True
    except FileExistsError:
        created = False
    except OSError as e:
        raise UserError('cannot create the experiment root `{}`: {}.'.format(
            experiment_root, e.strerror or e))
    new_lock = not os.path.lexists(os.path.join(experiment_root, LOCK_FILE))
    cleanup.enter_context(locked_directory(experiment_root, 'train.py'))
    cleanup.callback(remove_if_unused, experiment_root, created, new_lock)


def remove_if_unused(experiment_root, created, new_lock):
    """Undoes `lock_root` in a folder that did not become an experiment (it
    holds no args.json): removes the lock file if `new_lock` says that
    lock_root made it, and the folder if `created` and it is then empty.
    A refused run so leaves a foreign folder as it found it."""
    with contextlib.suppress(OSError):
        if os.path.exists(os.path.join(experiment_root, 'args.json')):
            return
        if new_lock:
            os.remove(os.path.join(experiment_root, LOCK_FILE))
        if created and not os.listdir(experiment_root):
            os.rmdir(experiment_root)


def store_arguments(args, rewrite):
    """Writes args.json when `rewrite` and starts train.log, in the experiment
    root that `lock_root` locked (see train())."""
    try:
        remove_leftovers(args.experiment_root)
        if rewrite:
            write_args(args)
        cli.setup_logging(os.path.join(args.experiment_root, 'train.log'))
    except OSError as e:
        raise UserError('cannot write to the experiment root `{}`: {}.'.format(
            args.experiment_root, e.strerror or e))
