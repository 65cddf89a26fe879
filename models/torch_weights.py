"""PyTorch weight files (`.pth`, `.pt`) read as data, without PyTorch and without running them.

`torch.load` unpickles the file, and a pickle can call any Python function
it names: a weights file from the internet can run code. This reader instead
accepts only what a saved state dict holds (ordered dicts, tensors rebuilt
from their storages, the storage types, plain numbers and strings) and
refuses any other function or class a pickle names, with one message, before
calling anything. It reads both of PyTorch's formats: the legacy one (five
pickles in a row, then the raw storages) and the zip archive of `torch.save`
since PyTorch 1.6 (`data.pkl` beside one file per storage). `keras_weights`
turns a module's tensors into the weights of the Keras layer that takes them.
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.storage import files

# The legacy format's first pickle.
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

# PyTorch's storage classes, by the name a pickle gives them, and their NumPy
# types; bfloat16 is read as its 16 bits and widened to float32.
STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class Storage:
    """A tensor storage named by the pickle, filled with its data afterwards."""

    def __init__(self, dtype, key, numel):
        if numel < 0:
            raise ValueError('storage {} claims {} values'.format(key, numel))
        self.dtype, self.key, self.numel = dtype, key, numel
        # The type of the stored bits: bfloat16's are 16-bit integers.
        self.raw_dtype = np.dtype(np.uint16 if dtype == 'bfloat16' else dtype)
        self.nbytes = numel * self.raw_dtype.itemsize
        self.data = None

    def fill(self, raw):
        """Sets the storage's values from its raw little-endian bytes."""
        if len(raw) < self.nbytes:
            raise ValueError('storage {} holds {} bytes, not {}'.format(
                self.key, len(raw), self.nbytes))
        values = np.frombuffer(raw, self.raw_dtype.newbyteorder('<'), self.numel)
        if self.dtype == 'bfloat16':
            values = (values.astype(np.uint32) << 16).view(np.float32)
        self.data = values.astype(values.dtype.newbyteorder('='))


class Tensor:
    """A tensor of the pickle: a view (offset, size, stride) into a `Storage`."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, Storage):
            raise pickle.UnpicklingError('a tensor without a storage')
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)

    def numpy(self):
        data = self.storage.data
        if (self.size and len(self.size) != len(self.stride)) or min(self.size + (0,)) < 0:
            raise ValueError('a tensor of storage {} has sizes {} and strides {}'.format(
                self.storage.key, self.size, self.stride))
        # A view never holds more values than its storage in a saved state
        # dict; one that claims more (by strides of 0) would make the copy
        # below as large as the claim.
        if int(np.prod(self.size, dtype=object)) > max(len(data), 1):
            raise ValueError('a tensor claims more values than its storage {} holds'.format(
                self.storage.key))
        if not self.size:
            if not 0 <= self.offset < len(data):
                raise ValueError('a tensor reaches outside its storage {}'.format(
                    self.storage.key))
            return np.array(data[self.offset])
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if min(self.size) > 0 and (self.offset < 0 or last >= len(data) or min(self.stride) < 0):
            raise ValueError('a tensor reaches outside its storage {}'.format(self.storage.key))
        return np.lib.stride_tricks.as_strided(
            data[self.offset:], self.size, [s * data.itemsize for s in self.stride]).copy()


def rebuild_tensor(storage, offset, size, stride, *ignored):
    """`torch._utils._rebuild_tensor_v2` (and v1) as data: requires_grad,
    backward hooks and metadata are ignored."""
    return Tensor(storage, offset, size, stride)


def rebuild_parameter(tensor, *ignored):
    """`torch._utils._rebuild_parameter`: a parameter is its tensor."""
    return tensor


def storage_type(name):
    return ('storage type', STORAGE_DTYPES[name])


# What a pickle of a state dict may name: (module, name) -> what stands for it.
# A training checkpoint beside it (fast-reid's holds the optimiser's and the
# learning-rate schedule's states) also names `Counter`, the milestones of
# PyTorch's MultiStepLR: a dict of counts, which calls nothing.
ALLOWED = {('collections', 'OrderedDict'): collections.OrderedDict,
           ('collections', 'Counter'): collections.Counter,
           ('torch._utils', '_rebuild_tensor'): rebuild_tensor,
           ('torch._utils', '_rebuild_tensor_v2'): rebuild_tensor,
           ('torch._utils', '_rebuild_parameter'): rebuild_parameter}
ALLOWED.update({('torch', name): storage_type(name) for name in STORAGE_DTYPES})


# The most a zip-format file's `data.pkl` may inflate to: the pickle of a
# state dict holds names and tensor records, a few megabytes for the largest
# nets, while its tensors' values lie in the storage members.
MAX_PICKLE_BYTES = 256 << 20


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something other than the parts of a state dict."""


class PlainUnpickler(pickle.Unpickler):
    """An unpickler of plain values (numbers, strings, lists, tuples, dicts):
    it resolves no name and no persistent record, so that nothing a pickle
    names is ever called. The legacy format's magic number, protocol version,
    system description and list of storage keys are read with it."""

    def __init__(self, file):
        super().__init__(file, encoding='utf-8')

    def find_class(self, module, name):
        raise RefusedPickle('it asks to call `{}.{}` where only plain values belong (a pickle '
                            'can run code; this one may try to)'.format(module, name))

    def persistent_load(self, pid):
        raise RefusedPickle('it holds a persistent record where only plain values belong')


class StateDictUnpickler(PlainUnpickler):
    """An unpickler that resolves only `ALLOWED` names and PyTorch's storage records."""

    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise RefusedPickle('it asks to call `{}.{}`, which a file of weights never needs '
                                '(a pickle can run code; this one may try to)'.format(module,
                                                                                      name))
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata]).
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage' and
                isinstance(pid[1], tuple) and pid[1][0] == 'storage type'):
            raise RefusedPickle('it holds a persistent record that is not a tensor storage')
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = Storage(pid[1][1], key, int(pid[4]))
        return self.storages[key]


def load_legacy(file):
    """The object of a legacy-format file, its storages filled."""
    if PlainUnpickler(file).load() != LEGACY_MAGIC:
        raise pickle.UnpicklingError('not a PyTorch file (its magic number differs)')
    PlainUnpickler(file).load()  # The protocol version.
    PlainUnpickler(file).load()  # The system's description.
    storages = {}
    result = StateDictUnpickler(file, storages).load()
    keys = PlainUnpickler(file).load()
    if not isinstance(keys, list):
        raise ValueError('the list of storages is a {}'.format(type(keys).__name__))
    for key in keys:
        storage = storages[str(key)]
        header = file.read(8)
        if len(header) < 8:
            raise ValueError('the file ends before storage {}'.format(key))
        numel = int.from_bytes(header, 'little')
        if numel != storage.numel:
            raise ValueError('storage {} has {} values, not {}'.format(key, numel, storage.numel))
        # Read no more than the file holds, whatever a damaged header claims.
        if storage.nbytes > os.fstat(file.fileno()).st_size - file.tell():
            raise ValueError('storage {} claims more bytes than the file holds'.format(key))
        storage.fill(file.read(storage.nbytes))
    return result


def load_zip(path):
    """The object of a zip-format file (`archive/data.pkl`, `archive/data/<key>`)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith('/data.pkl')]
        if len(pickles) != 1:
            raise ValueError('the archive holds no single `data.pkl`')
        folder = pickles[0][:-len('data.pkl')]
        info = member(archive, pickles[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise ValueError('`{}` claims {} bytes, more than the pickle of any state dict '
                             '({} MiB)'.format(info.filename, info.file_size,
                                               MAX_PICKLE_BYTES >> 20))
        storages = {}
        with archive.open(info) as f:
            result = StateDictUnpickler(io.BytesIO(f.read(MAX_PICKLE_BYTES)), storages).load()
        for key, storage in storages.items():
            info = member(archive, folder + 'data/' + key)
            if info.file_size < storage.nbytes:
                raise ValueError('storage {} holds {} bytes, not {}'.format(
                    key, info.file_size, storage.nbytes))
            # Only what the tensors need is read: a member that inflates
            # beyond its storage (a zip bomb) is never read whole.
            with archive.open(info) as f:
                storage.fill(f.read(storage.nbytes))
    return result


def member(archive, name):
    """The `ZipInfo` of the archive's member `name`."""
    try:
        return archive.getinfo(name)
    except KeyError:
        raise ValueError('the archive lacks `{}`'.format(name))


def tensors_of(loaded):
    """The state dict of a loaded file, each `Tensor` as a NumPy array: the
    object itself, or its `state_dict` entry (as torchreid's training
    checkpoints hold it) or `model` entry (as fast-reid's do); None for
    anything else. Only these two levels are looked at, so that a pickle of
    deeply nested or self-referring containers costs nothing."""
    for key in ('state_dict', 'model'):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items()):
        return None
    return collections.OrderedDict((k, v.numpy()) for k, v in loaded.items())


KERNEL_AXES = {'Conv2D': (2, 3, 1, 0), 'GroupedConv2D': (2, 3, 1, 0),
               'DepthwiseConv2D': (2, 3, 0, 1), 'Dense': (1, 0), 'TokenDense': (1, 0),
               'GroupNormalization': None, 'GeneralizedMeanPooling': None,
               'LayerNormalization': None}


def keras_weights(layer, tensors, path, module, net):
    """The Keras weights of `layer`, in its order, from the tensors of its
    torchreid `module` ({last key part: array}).

    Raises:
        UserError naming the first tensor that is missing, of another shape,
        or that the layer has no place for (a batch norm's statistics where
        the net normalises per instance).
    """
    kind = type(layer).__name__
    if 'BatchNormalization' in kind:
        parts, axes = ['weight', 'bias', 'running_mean', 'running_var'], [None] * 4
        if not layer.center:
            # BNNeck's batch norm has no shift: PyTorch's is frozen at zero.
            parts, axes = ['weight', 'running_mean', 'running_var'], [None] * 3
            bias = tensors.pop('bias', None)
            if bias is not None and np.any(bias != 0):
                raise UserError('`{}` holds a non-zero `{}.bias`, but {}\'s batch norm there has '
                                'no shift (its bias is frozen at zero).'.format(path, module, net))
    elif kind == 'GeneralizedMeanPooling':
        parts, axes = ['p'], [None]
    else:
        parts = ['weight', 'bias'][:len(layer.weights)]
        axes = [KERNEL_AXES[kind], None]
    extra = sorted(set(tensors) - set(parts))
    if extra:
        raise UserError('`{}` holds `{}.{}`, which {} has no place for; is it another '
                        'variant of the net?'.format(path, module, extra[0], net))
    arrays = []
    for part, axis, weight in zip(parts, axes, layer.weights):
        if part not in tensors:
            raise UserError('`{}` lacks `{}.{}`.'.format(path, module, part))
        array, expected = tensors[part], tuple(weight.shape)
        if axis is not None:
            # The shape the layer takes, in PyTorch's order of axes.
            expected = tuple(expected[axis.index(i)] for i in range(len(axis)))
        if array.shape != expected:
            raise UserError('`{}` holds `{}.{}` of shape {}, but {} takes {}; is it another '
                            'width or depth of the net?'.format(path, module, part, array.shape,
                                                                net, expected))
        arrays.append(array if axis is None else array.transpose(axis))
    return arrays


def read_state_dict(path):
    """The tensors of a PyTorch state dict file, as NumPy arrays by name.

    Takes a plain state dict or one wrapped as `{'state_dict': ...}` (as
    torchreid's training checkpoints are) or `{'model': ...}` (fast-reid's
    checkpoints, with the optimiser's state beside it), and drops the `module.` prefix of
    models saved through `DataParallel`.

    Raises:
        UserError naming the file when it cannot be read, refusing anything it
        would need to call beyond the parts of a state dict.
    """
    files.check_regular(path, 'the weights', 'pass a PyTorch weights file')
    try:
        with open(path, 'rb') as f:
            start = f.read(4)
            if start == b'PK\x03\x04':
                loaded = load_zip(path)
            else:
                f.seek(0)
                loaded = load_legacy(f)
        state = tensors_of(loaded)
    except RefusedPickle as e:
        raise UserError('refusing `{}`: {}. Only plain PyTorch state dicts are read.'.format(
            path, e))
    except OSError as e:
        raise UserError('cannot read `{}`: {}.'.format(path, e.strerror or e))
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile, UnicodeDecodeError, OverflowError,
            MemoryError) as e:
        raise UserError('`{}` is not a readable PyTorch weights file ({}: {}); is it damaged '
                        'or truncated?'.format(path, type(e).__name__, str(e)[:200]))
    if state is None:
        raise UserError('`{}` holds no state dict (a mapping of names to tensors); save the '
                        'model\'s `state_dict()`.'.format(path))
    return collections.OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())
