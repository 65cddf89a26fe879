"""The names, limits and value types of the scripts' flags, without TensorFlow.

The scripts build their parsers from these before TensorFlow is imported, so
`--help` and a mistyped flag answer at once. The modules that implement each
choice import their tuple from here; tests/test_layout.py checks that the
loss names match the functions of `loss.LOSS_CHOICES` and `loss.ID_LOSSES`.
"""

import argparse
import math
import os
import shlex

from triplet_reid.cli import UserError


# The global poolings of layers.pooling_layer.
POOLINGS = ('avg', 'max', 'gem')

# The triplet losses of loss.LOSS_CHOICES and the identity losses of loss.ID_LOSSES.
LOSSES = ('batch_hard', 'batch_all', 'batch_all_mean', 'batch_sample', 'weighted')
ID_LOSSES = ('softmax', 'cosface', 'arcface', 'circle')

# The learning-rate schedules of schedules.LearningRate.
LR_SCHEDULES = ('exponential', 'step', 'cosine')

# The fills of sampler.random_erasing.
ERASING_FILLS = ('mean', 'noise')

# Video training: the temporal aggregations of the temporal/ plug-ins
# (temporal.TEMPORAL_CHOICES), where they apply (on the embeddings, after the
# head, or on the body's pooled features, before it), and how the T frames of
# a tracklet are chosen (inputs.sampler.choose_frames).
TEMPORAL_POOLINGS = ('attention', 'avg', 'max')
TEMPORAL_POSITIONS = ('embedding', 'features')
FRAME_SAMPLINGS = ('evenly', 'chunk', 'random')

# Images with more pixels than this are refused before they are decoded: a
# small file can hold a huge single-colour picture (20000×20000 PNGs take 1.2
# MB on disk and 13 GB in training). Person crops have a few thousand pixels.
MAX_IMAGE_PIXELS = 25_000_000


# Command-line argument types
###

def _check_directory(arg, access, access_str):
    """Accepts `arg` when it exists with `access`, or its closest existing parent has it."""
    path_head = os.path.abspath(arg)
    while True:
        if os.path.exists(path_head):
            if not os.path.isdir(path_head):
                raise argparse.ArgumentTypeError(
                    '`{}` is not a {} directory: `{}` exists and is not a '
                    'directory.'.format(arg, access_str, path_head))
            if os.access(path_head, access):
                return arg
            raise argparse.ArgumentTypeError(
                '`{}` is not a {} directory: `{}` exists without {} '
                'access.'.format(arg, access_str, path_head, access_str))
        parent = os.path.dirname(path_head)
        if parent == path_head:
            break
        path_head = parent
    raise argparse.ArgumentTypeError('`{}` is not a valid {} path.'.format(arg, access_str))


def writeable_directory(arg):
    """A directory that exists and is writeable, or can be created."""
    return _check_directory(arg, os.W_OK, 'writeable')


def readable_directory(arg):
    """An existing, readable directory."""
    if not os.path.isdir(arg):
        raise argparse.ArgumentTypeError('`{}` is not an existing directory.'.format(arg))
    return _check_directory(arg, os.R_OK, 'readable')


def readable_path(arg):
    """An existing, readable directory or file (such as a frames folder or a video)."""
    if os.path.isfile(arg):
        if not os.access(arg, os.R_OK):
            raise argparse.ArgumentTypeError('`{}` is a file without read access.'.format(arg))
        return arg
    return readable_directory(arg)


def camera(arg):
    """A camera's name: one name, as it leads the rows of an embeddings file
    (`CAMERA/000001.jpg#7`) and the default output file's name, so never a
    path (no separator, no `.` or `..`) and never empty."""
    if not arg.strip() or arg in ('.', '..') or any(c in arg for c in '/\\\0'):
        raise argparse.ArgumentTypeError(
            '`{}` is no camera name: a camera is one name (such as cam1), without `/`, `\\`, '
            'and not empty, `.` or `..`.'.format(arg))
    return arg


# Integers go into TensorFlow's int64 (steps, sizes), so larger ones are refused
# where they are typed, not where they overflow.
MAX_INT = 2 ** 63 - 1


def _number_greater_x(arg, type_, x):
    try:
        value = type_(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not an {}.'.format(arg, type_.__name__))
    if type_ is int and value > MAX_INT:
        raise argparse.ArgumentTypeError('found {} where an int of at most 2**63 - 1 was '
                                         'required.'.format(arg))
    if value > x and math.isfinite(value):
        return value
    raise argparse.ArgumentTypeError(
        'found {} where an {} greater than {} was required.'.format(arg, type_.__name__, x))


def int_between(lower, upper):
    """An argument type: an int from `lower` to `upper`, both included."""
    def checked(arg):
        value = _number_greater_x(arg, int, lower - 1)
        if value > upper:
            raise argparse.ArgumentTypeError('found {} where an int from {} to {} was '
                                             'required.'.format(arg, lower, upper))
        return value
    checked.__name__ = 'int'
    return checked


def float_between(lower, upper, include_lower=True):
    """An argument type: a finite float from `lower` (excluded unless
    `include_lower`) to `upper`, included. Every float flag has an upper
    bound, so that a typo such as 1e40 is refused where it is typed rather
    than overflowing in the middle of the work."""
    def checked(arg):
        try:
            value = float(arg)
        except ValueError:
            raise argparse.ArgumentTypeError('`{}` is not a float.'.format(arg))
        if not (value >= lower if include_lower else value > lower) or not value <= upper:
            raise argparse.ArgumentTypeError('found {} where a number {} {} to {} was '
                                             'required.'.format(
                                                 arg, 'from' if include_lower else 'above',
                                                 lower, upper))
        return value
    checked.__name__ = 'float'
    return checked


# A random seed, as NumPy and Keras take it.
seed = int_between(0, 2 ** 32 - 1)


def positive_int(arg):
    return _number_greater_x(arg, int, 0)


def nonnegative_int(arg):
    return _number_greater_x(arg, int, -1)


def unit_float(arg):
    """A float between 0 and 1, both included."""
    try:
        value = float(arg)
    except ValueError:
        raise argparse.ArgumentTypeError('`{}` is not a float.'.format(arg))
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError('found {} where a value in [0, 1] was required.'
                                         .format(arg))
    return value


def float_or_string(arg):
    """Tries to convert the string to float, otherwise returns the string."""
    try:
        return float(arg)
    except (ValueError, TypeError):
        return arg


# Distances between embeddings are in the tens to hundreds; a larger margin is a typo.
MAX_MARGIN = 1000


def margin(arg):
    """The triplet margin: a non-negative float, `soft` or `none`."""
    value = float_or_string(arg)
    if isinstance(value, float):
        if not 0 <= value <= MAX_MARGIN:
            raise argparse.ArgumentTypeError('a numeric margin must be a number from 0 to {}, '
                                             'got {}.'.format(MAX_MARGIN, arg))
        return value
    if value.lower() in ('soft', 'none'):
        return value.lower()
    raise argparse.ArgumentTypeError(
        'the margin must be a number, `soft` or `none`, got `{}`.'.format(arg))


class OneOrMore(argparse.Action):
    """A flag of one or more values that may also be repeated (`--x a b` or
    `--x a --x b`). A single value is stored as itself, not as a list, so
    that the args.json of a one-value run reads as the original's did."""

    def __init__(self, option_strings, dest, nargs='+', **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None else as_list(current)
        items = items + list(values)
        setattr(namespace, self.dest, items[0] if len(items) == 1 else items)


def add_rerank_settings(parser):
    """Adds the parameters of k-reciprocal re-ranking to `parser`: the same
    flags, with the paper's defaults, wherever distances are re-ranked."""
    parser.add_argument(
        '--rerank_k1', default=20, type=positive_int,
        help='k1 of re-ranking: the size of the k-reciprocal neighbourhoods.')
    parser.add_argument(
        '--rerank_k2', default=6, type=positive_int,
        help='k2 of re-ranking: the neighbours averaged by local query expansion (1 turns it '
             'off); at most k1 + 1.')
    parser.add_argument(
        '--rerank_lambda', default=0.3, type=unit_float,
        help='λ of re-ranking: the weight of the original distance against the Jaccard '
             'distance, in [0, 1].')


def as_list(value):
    """`value` as a list: a OneOrMore flag's single value becomes a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


# The folder of the recipes that `@NAME` finds by name, and the most an
# argument file may hold: a recipe is a few dozen flags.
RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'recipes')
MAX_ARGUMENT_FILE_BYTES = 64 << 10


def recipe_names():
    """The names of the recipes in `RECIPES`, for `@NAME`; none where an
    installation lacks the folder (`--help` still answers)."""
    if not os.path.isdir(RECIPES):
        return []
    return sorted(name[:-len('.args')] for name in os.listdir(RECIPES) if name.endswith('.args'))


def missing_argument_file(path):
    """The error for an `@FILE` that is no file: the recipe of the same name
    where there is one (`@recipes/trinet.args` run by an installed command,
    away from a checkout, is `@trinet`), else the recipes there are."""
    names = recipe_names()
    stem = os.path.basename(path)[:-len('.args')] if path.endswith('.args') else None
    if stem in names:
        return UserError('the argument file `{}` is not a file here ({}); the recipe of that '
                         'name comes with this installation as @{}.'.format(
                             path, os.getcwd(), stem))
    if not names:
        return UserError('the argument file `{}` is not a file, and this installation has no '
                         'recipes (`{}` is missing); reinstall it, or give the path of a file '
                         'of flags.'.format(path, RECIPES))
    return UserError('the argument file `{}` is not a file; the recipes are {} (as @NAME).'
                     .format(path, ', '.join(names)))


def expand_argument_files(argv):
    """`argv` with each `@FILE` replaced by the arguments the file holds,
    split as a shell splits them, `#` starting a comment, so that a recipe
    is a file of flags (`train.py @recipes/trinet.args --experiment_root
    …`; flags after it override its own). `@NAME` alone finds
    `recipes/NAME.args` beside this project when no file FILE exists.

    Raises:
        UserError naming a file that is missing, no regular file, larger
        than `MAX_ARGUMENT_FILE_BYTES`, not UTF-8, or unbalanced in its quotes.
    """
    expanded = []
    for arg in argv:
        if not arg.startswith('@'):
            expanded.append(arg)
            continue
        path = arg[1:]
        if not os.path.lexists(path) and os.path.isfile(os.path.join(RECIPES, path + '.args')):
            path = os.path.join(RECIPES, path + '.args')
        if not os.path.isfile(path):
            raise missing_argument_file(path)
        try:
            with open(path, 'rb') as f:
                raw = f.read(MAX_ARGUMENT_FILE_BYTES + 1)
            if len(raw) > MAX_ARGUMENT_FILE_BYTES:
                raise ValueError('it is larger than {} KiB, which no recipe is'.format(
                    MAX_ARGUMENT_FILE_BYTES >> 10))
            expanded += shlex.split(raw.decode('utf-8'), comments=True)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError('cannot read the argument file `{}`: {}.'.format(
                path, getattr(e, 'strerror', None) or e))
    return expanded


def given_arguments(parser, argv):
    """Returns the set of destinations the user gave explicitly on the command line.

    Parses `argv` a second time with every default suppressed, so what remains
    in the namespace is exactly what was typed.
    """
    # argparse keeps its actions in a private list (docs/private_apis.md).
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def check_stored_arguments(parser, stored, path):
    """Refuses stored arguments (a dict from args.json) that the parser would
    not accept on the command line: a wrong type, a value outside the choices,
    a non-finite number.

    Raises:
        UserError naming the file, the argument and the value.
    """
    # argparse keeps its actions in a private list (docs/private_apis.md).
    for action in parser._actions:
        if action.dest not in stored:
            continue
        value = stored[action.dest]
        if value is None:
            if action.default is None:
                continue
            # A flag with a value by default never stores null: the net, say,
            # which a resumed run would then try to build by that name.
            raise UserError('`{}` stores `{}` = null, where train.py writes a value (by '
                            'default `{}`); fix or remove it there, or start a new experiment '
                            'root.'.format(path, action.dest, action.default))
        if action.type in (writeable_directory, readable_directory) and all(
                isinstance(item, str) for item in as_list(value)):
            # Folders are checked where they are used: they may have moved.
            continue
        values = as_list(value) if isinstance(action, OneOrMore) else value if isinstance(
            action.nargs, str) and action.nargs in '+*' else [value]
        try:
            if not isinstance(values, list):
                raise ValueError('a list was expected')
            for item in values:
                if isinstance(action.default, bool) and not isinstance(item, bool):
                    raise ValueError('true or false was expected')
                if isinstance(item, (dict, list)):
                    raise ValueError('a single value was expected')
                if action.type in (None, writeable_directory, readable_directory) and \
                        not isinstance(action.default, bool) and not isinstance(item, str):
                    raise ValueError('a text was expected')
                checked = action.type(str(item)) if action.type else item
                if action.type is int and (isinstance(item, bool) or checked != item):
                    raise ValueError('an integer was expected')
                if action.choices is not None and checked not in action.choices:
                    raise ValueError('one of {} was expected'.format(
                        ', '.join(map(str, action.choices))))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise UserError('`{}` stores `{}` = `{}`, which is not a valid value ({}); fix or '
                            'remove it there, or start a new experiment root.'.format(
                                path, action.dest, value, e))
