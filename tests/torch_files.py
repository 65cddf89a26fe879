"""PyTorch's weight files written without PyTorch (tests only): the writer of
PyTorch's two formats over stand-in `torch` modules, with which the model-zoo
tests make torchreid's and fast-reid's files, hostile ones included, and the
randomised batch norms that make imported statistics matter."""

import collections
import io
import pickle
import sys
import types
import zipfile

import keras
import numpy as np

from triplet_reid.models import torch_weights


class Stored:
    """A tensor's storage as the writer pickles it: by reference."""

    def __init__(self, key, array):
        self.key, self.array = key, array


class FakeTensor:
    def __init__(self, storage, offset, shape, strides, reduce):
        self.args = (storage, offset, shape, strides, False, collections.OrderedDict())
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce, self.args


def stand_in_torch():
    """Modules named `torch` and `torch._utils` whose names pickle as PyTorch's."""
    torch, utils = types.ModuleType('torch'), types.ModuleType('torch._utils')

    def _rebuild_tensor_v2(*args):
        raise AssertionError('never called')
    _rebuild_tensor_v2.__module__ = 'torch._utils'
    _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in torch_weights.STORAGE_DTYPES:
        setattr(torch, name, type(name, (), {'__module__': 'torch'}))
    return torch, utils


class View:
    """An array to write as a tensor of the given sizes, strides and storage
    count instead of its own (hostile claims)."""

    def __init__(self, array, shape, strides, numel=None):
        self.array, self.shape, self.strides = array, shape, strides
        self.numel = len(array) if numel is None else numel


STORAGE_OF = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.float16): 'HalfStorage',
              np.dtype(np.int64): 'LongStorage', np.dtype(np.uint8): 'ByteStorage'}


def write_pth(path, obj, zip_format=False, monkeypatch=None):
    """Writes `obj` (dicts of NumPy arrays, numbers, strings) as torch.save
    would: arrays become tensors over storages (a 2-D array as the
    transposed view of a contiguous storage, as PyTorch saves `.t()`); a
    (N,) uint16 array named `*bf16` is stored as bfloat16 bits."""
    torch, utils = stand_in_torch()
    storages = []

    def tensors(value):
        # A Counter pickles as itself, as a learning-rate schedule's milestones do.
        if isinstance(value, dict) and not isinstance(value, collections.Counter):
            return collections.OrderedDict((k, tensors(v)) for k, v in value.items())
        if isinstance(value, View):
            stored = Stored(str(len(storages)), value.array)
            stored.numel = value.numel
            storages.append((stored, getattr(torch, STORAGE_OF[value.array.dtype])))
            return FakeTensor(stored, 0, value.shape, value.strides, utils._rebuild_tensor_v2)
        if not isinstance(value, np.ndarray):
            return value
        kind = 'BFloat16Storage' if value.dtype == np.uint16 else STORAGE_OF[value.dtype]
        if value.ndim == 2:
            data = np.ascontiguousarray(value.T)
            stride = (1, value.shape[0])
        else:
            data = np.ascontiguousarray(value)
            stride = tuple(s // max(data.itemsize, 1) for s in data.strides)
        stored = Stored(str(len(storages)), data.ravel())
        storages.append((stored, getattr(torch, kind)))
        return FakeTensor(stored, 0, value.shape, stride, utils._rebuild_tensor_v2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, Stored):
                kind = dict((id(s), k) for s, k in storages)[id(value)]
                return ('storage', kind, value.key, 'cpu', getattr(value, 'numel',
                                                                    len(value.array)))
            return None

    saved = {'torch': torch, 'torch._utils': utils}
    previous = {name: sys.modules.get(name) for name in saved}
    sys.modules.update(saved)
    try:
        body = io.BytesIO()
        Pickler(body, protocol=2).dump(tensors(obj))
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module
    if zip_format:
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('archive/data.pkl', body.getvalue())
            archive.writestr('archive/version', '3\n')
            for stored, _ in storages:
                archive.writestr('archive/data/' + stored.key, stored.array.tobytes())
        return str(path)
    with open(path, 'wb') as f:
        for header in (torch_weights.LEGACY_MAGIC, 1001,
                       {'protocol_version': 1001, 'little_endian': True}):
            pickle.dump(header, f, protocol=2)
        f.write(body.getvalue())
        pickle.dump([stored.key for stored, _ in storages], f, protocol=2)
        for stored, _ in storages:
            f.write(len(stored.array).to_bytes(8, 'little'))
            f.write(stored.array.tobytes())
    return str(path)


def randomise_batch_norms(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomise_batch_norms(layer, rng)
        elif 'BatchNormalization' in type(layer).__name__:
            gamma, *beta, mean, var = layer.get_weights()  # BNNeck's has no beta.
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape)] +
                              [rng.normal(0, 0.1, b.shape) for b in beta] +
                              [rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
