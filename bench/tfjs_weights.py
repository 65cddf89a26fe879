#!/usr/bin/env python3
"""Turn a TF.js layers export of Keras' MobileNetV2 into a Keras weights file.

A TF.js export (`model.json` and its `weights.bin` shards, as tfjs-converter
and Teachable Machine write them) names every tensor `<layer>/<weight>` after
the Keras layers it came from, so the body's weights can be read by name into
`keras.applications.MobileNetV2(alpha=…, include_top=False)` and saved as the
`.weights.h5` file that `--initial_checkpoint` takes for `keras_mobilenet_v2`
and `keras_mobilenet_v2_035`:

    .venv/bin/python -m bench.tfjs_weights --model_json tm-my-image-model/model.json \\
        --output mobilenet_v2_035.weights.h5
    .venv/bin/python train.py --model_name keras_mobilenet_v2_035 \\
        --initial_checkpoint mobilenet_v2_035.weights.h5 …

Every weight of the body must be in the export with its shape; tensors of
layers the body lacks (a classifier on top) are ignored and counted. The width
is found from the tensors' shapes unless `--alpha` gives it. Float32 and
float16 tensors are read as they are, 8- and 16-bit quantised ones through
their scale and minimum. Users with the internet get the same ImageNet weights
with `--initial_checkpoint imagenet`; this is for machines without it.
"""

import argparse
import json
import os
import sys

import numpy as np

from triplet_reid.storage import files

# The widths Keras has ImageNet weights for; the search order when guessing.
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
DTYPES = {'float32': np.float32, 'int32': np.int32, 'float16': np.float16,
          'uint8': np.uint8, 'uint16': np.uint16}


class ExportError(Exception):
    """A problem with the export that the user can fix; printed without a traceback."""


def read_tfjs_weights(model_json):
    """The tensors of a TF.js layers export.

    Returns:
        {name: float32 array}, names as the export writes them
        (`Conv1/kernel`, …).
    """
    try:
        with open(model_json) as f:
            manifest = json.load(f)['weightsManifest']
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ExportError('`{}` is not a TF.js model.json with a weightsManifest: {}.'.format(
            model_json, e))
    folder = os.path.dirname(os.path.abspath(model_json))
    tensors = {}
    for group in manifest:
        data = b''
        for path in group['paths']:
            try:
                with open(os.path.join(folder, path), 'rb') as f:
                    data += f.read()
            except OSError as e:
                raise ExportError('cannot read the weights shard `{}` that `{}` names: {}.'.format(
                    os.path.join(folder, path), model_json, e.strerror or e))
        offset = 0
        for spec in group['weights']:
            quantization = spec.get('quantization')
            dtype = DTYPES.get(quantization['dtype'] if quantization else spec['dtype'])
            if dtype is None:
                raise ExportError('`{}` stores `{}` as {}, which this reader does not '
                                  'know.'.format(model_json, spec['name'], spec['dtype']))
            count = int(np.prod(spec['shape'], dtype=np.int64))
            size = count * np.dtype(dtype).itemsize
            if offset + size > len(data):
                raise ExportError('the weights of `{}` end before `{}`: the shards are '
                                  'truncated or belong to another model.'.format(
                                      model_json, spec['name']))
            values = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += size
            values = values.astype(np.float32)
            if quantization and quantization['dtype'] != 'float16':
                values = values * quantization['scale'] + quantization['min']
            tensors[spec['name']] = values.reshape(spec['shape'])
    return tensors


def by_layer_name(tensors):
    """{`layer/weight`: array}, named as Keras 3 names the variables: the last two
    parts of each name, as an export of a nested model may prefix them with the
    outer model's name, and Keras 2's `depthwise_kernel` is now `kernel` (a
    depthwise layer has no other)."""
    return {'/'.join(name.split('/')[-2:]).replace('/depthwise_kernel', '/kernel'): value
            for name, value in tensors.items()}


def variable_name(variable):
    """`layer/weight`: the end of a Keras 3 variable's path."""
    return '/'.join(variable.path.split('/')[-2:])


def body_weights(application, tensors):
    """The export's arrays for every weight of `application`, in its order.

    Raises:
        ExportError naming the first missing or misshapen weight.
    """
    values = []
    for variable in application.weights:
        name = variable_name(variable)
        if name not in tensors:
            raise ExportError('the export has no `{}`; it is not a MobileNetV2 of this '
                              'width.'.format(name))
        if tuple(tensors[name].shape) != tuple(variable.shape):
            raise ExportError('`{}` has the shape {} in the export, the network needs {}.'.format(
                name, list(tensors[name].shape), list(variable.shape)))
        values.append(tensors[name])
    return values


def mobilenet_v2(alpha, weights=None):
    import keras
    return keras.applications.MobileNetV2(include_top=False, weights=weights, alpha=alpha,
                                          input_shape=(None, None, 3))


def convert(model_json, output, alpha=None):
    """Writes the body's weights of the export to `output` (`.weights.h5`).

    Returns:
        (alpha, number of weights loaded, number of export tensors ignored).
    """
    tensors = by_layer_name(read_tfjs_weights(model_json))
    for candidate in ALPHAS if alpha is None else (alpha,):
        application = mobilenet_v2(candidate)
        try:
            values = body_weights(application, tensors)
        except ExportError:
            if alpha is not None:
                raise
            continue
        application.set_weights(values)
        # Keras wants the suffix; a unique temporary name keeps it, so that the
        # rename is atomic and two conversions at once never share a file.
        try:
            with files.output(output, suffix='.weights.h5') as partial:
                application.save_weights(partial)
        except OSError as e:
            raise ExportError('cannot write `{}`: {}.'.format(output, e.strerror or e))
        used = {variable_name(v) for v in application.weights}
        return candidate, len(values), len(set(tensors) - used)
    raise ExportError('`{}` is no MobileNetV2 of any width Keras knows ({}): its tensors do '
                      'not fit.'.format(model_json, ', '.join(map(str, ALPHAS))))


def alpha_type(arg):
    try:
        value = float(arg)
    except ValueError:
        value = None
    if value not in ALPHAS:
        raise argparse.ArgumentTypeError('expected one of {}, got `{}`.'.format(
            ', '.join(map(str, ALPHAS)), arg))
    return value


def weights_file(arg):
    if not arg.endswith('.weights.h5'):
        raise argparse.ArgumentTypeError('Keras weights files end in `.weights.h5`; got '
                                         '`{}`.'.format(arg))
    return arg


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--model_json', required=True,
                        help='The export\'s model.json; its weight shards lie beside it.')
    parser.add_argument('--output', required=True, type=weights_file,
                        help='The Keras weights file to write (`….weights.h5`).')
    parser.add_argument('--alpha', type=alpha_type, default=None,
                        help='The width multiplier; found from the shapes by default.')
    args = parser.parse_args(argv)
    if os.path.isdir(args.output) or not os.path.isdir(os.path.dirname(
            os.path.abspath(args.output))):
        sys.exit('--output `{}` is not a file in an existing folder.'.format(args.output))
    try:
        alpha, loaded, ignored = convert(args.model_json, args.output, args.alpha)
    except ExportError as e:
        sys.exit('Error: {}'.format(e))
    print('Wrote {}: MobileNetV2 width {} without its top, {} weights ({} tensors of other '
          'layers ignored).'.format(args.output, alpha, loaded, ignored))


if __name__ == '__main__':
    main()
