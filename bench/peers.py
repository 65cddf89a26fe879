#!/usr/bin/env python3
"""Benchmark: the nets import_model.py reads, built by the peers' own code, against their import.

For each torchreid net (OSNet-AIN at four widths, OSNet-IBN, ResNet-50
with and without its 512-d fc layer) and each
fast-reid config (BoT, AGW and SBS on ResNet-50/101, with and without
IBN-a, and on ResNeSt-50; BoT on its ViT-Base), `bench/peers_torch.py`
builds the model with the peer's own code (torchreid's `osnet*.py`,
fast-reid's `build_model` from the config) in a
PyTorch environment of its own, gives it random weights with non-trivial
norms, saves it as the peer's training does, and embeds real pedestrian
crops as the peer tests. Here the file is imported (import_model.py's
code) and the same resized pixels are embedded, then compared: the
smallest and mean cosine per image, and mAP and rank-1 of both under the
peer's metric (Euclidean for torchreid, cosine for fast-reid). For the
models of `--exports`, the exports (SavedModel, ONNX, TFLite float32 and
int8) are compared too.

    /tmp/torchenv/bin/pip install torch==2.13.0 numpy pillow pyyaml yacs termcolor tabulate
    .venv/bin/python -m bench.peers --torch_python /tmp/torchenv/bin/python \\
        --torchreid deep-person-reid --fastreid fast-reid --image_root D/detected \\
        --query C/cuhk03_folders_query.csv --gallery C/cuhk03_folders_test.csv \\
        --json bench/results/peers_cuhk03.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SIDE = os.path.join(ROOT, 'bench', 'peers_torch.py')
TORCHREID_NETS = ('osnet_ain_x1_0', 'osnet_ain_x0_75', 'osnet_ain_x0_5', 'osnet_ain_x0_25',
                  'osnet_ibn_x1_0', 'resnet50', 'resnet50_fc512')
FASTREID_CONFIGS = tuple('configs/Market1501/{}.yml'.format(name) for name in (
    'bagtricks_R50', 'bagtricks_R50-ibn', 'bagtricks_R101-ibn', 'AGW_R50', 'AGW_R50-ibn',
    'AGW_R101-ibn', 'sbs_R50', 'sbs_R50-ibn', 'sbs_R101-ibn', 'bagtricks_S50', 'AGW_S50',
    'sbs_S50', 'bagtricks_vit'))
BATCH = 32


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def in_batches(function, pixels, cameras=None):
    """`function` of the pixels in batches (and of their cameras' rows, for
    a model with a camera embedding), concatenated."""
    return np.concatenate([np.asarray(function(pixels[i:i + BATCH]) if cameras is None else
                                      function(pixels[i:i + BATCH], cameras[i:i + BATCH]))
                           for i in range(0, len(pixels), BATCH)])


def peer_side(args, folder, name, kind, spec):
    """Runs the peer's side: (weights path, its .npz)."""
    weights, output = os.path.join(folder, name + '.pth'), os.path.join(folder, name + '.npz')
    command = [args.torch_python, TORCH_SIDE, '--kind', kind, '--weights_out', weights,
               '--image_root', args.image_root, '--output', output, '--threads',
               str(args.threads), '--csv', args.query, args.gallery]
    if kind == 'torchreid':
        command += ['--source', args.torchreid, '--net', spec]
    else:
        command += ['--source', args.fastreid, '--config', os.path.join(args.fastreid, spec)]
    subprocess.run(command, check=True)
    return weights, np.load(output)


def exported_forms(model, train_args, folder, name, pixels, int8=True, threads=2):
    """{form: function of pixels} for the exports of `model`: SavedModel,
    ONNX, TFLite float32 and (with `int8`) TFLite int8 calibrated on some of
    `pixels`, its interpreter on `threads` threads. With a camera embedding
    (`sie_cameras` in `train_args`), each function takes the pixels'
    cameras' rows too."""
    import tensorflow as tf
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter
    from triplet_reid.serving import exported

    size = (train_args['net_input_height'], train_args['net_input_width'])
    module = exported.EmbeddingModule(model, size, train_args['antialias'],
                                      train_args.get('sie_cameras'))
    saved = os.path.join(folder, name + '_saved_model')
    exported.export_saved_model(module, saved)
    signature = tf.saved_model.load(saved).signatures['serving_default']
    onnx_path = os.path.join(folder, name + '.onnx')
    exported.export_onnx(module, onnx_path)
    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])

    def inputs(x, cameras):
        return {'images': x} if cameras is None else {'images': x, 'cameras': cameras}
    forms = {'SavedModel': lambda x, c=None: signature(**{
        k: tf.constant(v) for k, v in inputs(x, c).items()})['emb'].numpy(),
             'ONNX': lambda x, c=None: session.run(None, inputs(x, c))[0]}
    tflites = [('TFLite float32', None)] + [('TFLite int8', pixels[::8][:32])] * int8
    for form, representative in tflites:
        path = os.path.join(folder, '{}_{}.tflite'.format(name, form.split()[1]))
        exported.export_tflite(module, path, representative)
        interpreter = Interpreter(model_path=path, num_threads=threads)

        def tflite(x, cameras=None, interpreter=interpreter):
            return exported.run_tflite(interpreter, x, cameras)
        forms[form] = tflite
    return forms


def measure(args, folder, kind, spec):
    """The rows of one net or config."""
    import tensorflow as tf
    from triplet_reid import common
    from triplet_reid import excluders
    from triplet_reid.evaluation import metrics
    from triplet_reid.models import fastreid, fastreid_vit, zoo
    from triplet_reid.models.inference import inference_function, load_experiment

    name = spec if kind == 'torchreid' else os.path.splitext(os.path.basename(spec))[0]
    weights, reference = peer_side(args, folder, name, kind, spec)
    root = os.path.join(folder, name)
    if kind == 'torchreid':
        stored = zoo.import_torchreid(weights, root)
    elif fastreid_vit.is_vit_config(fastreid.read_config(os.path.join(args.fastreid, spec))):
        stored = fastreid_vit.import_fastreid_vit(weights, os.path.join(args.fastreid, spec),
                                                  root)
    else:
        stored = fastreid.import_fastreid(weights, os.path.join(args.fastreid, spec), root)
    pixels, theirs = reference['pixels'].astype(np.float32), reference['features']
    query_pids, query_fids = common.load_dataset(args.query, None)
    gallery_pids, gallery_fids = common.load_dataset(args.gallery, None)
    excluder = excluders.load(args.excluder, query_fids, gallery_fids)
    count = len(query_fids)

    def figures(embs):
        result = metrics.evaluate(query_pids, query_fids, gallery_pids, metrics.metric_distances(
            embs[:count], embs[count:], stored['metric']), excluder)
        return {'mAP': round(100 * float(result['mAP']), 2),
                'rank1': round(100 * float(result['CMC'][0]), 2)}

    common_fields = dict(peer=kind, model=name, net=stored['model_name'],
                         input='{}x{}'.format(stored['net_input_height'],
                                              stored['net_input_width']))
    rows = [dict(common_fields, form='peer (PyTorch)', **figures(theirs))]

    def add(form, embs):
        cos = cosines(embs, theirs)
        rows.append(dict(common_fields, form=form, min_cosine=round(float(cos.min()), 6),
                         mean_cosine=round(float(cos.mean()), 6), **figures(embs)))

    model, train_args, _ = load_experiment(root)
    forward = inference_function(model)
    add('imported (Keras)', in_batches(lambda x: forward(tf.constant(x)).numpy(), pixels))
    if name in args.exports:
        for form, function in exported_forms(model, train_args, folder, name, pixels,
                                             threads=args.threads).items():
            add(form, in_batches(function, pixels))
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--torch_python', required=True, help='Python of a PyTorch environment.')
    parser.add_argument('--torchreid', required=True, help="A checkout of torchreid "
                        '(KaiyangZhou/deep-person-reid).')
    parser.add_argument('--fastreid', required=True, help='A checkout of fast-reid '
                        '(JDAI-CV/fast-reid).')
    parser.add_argument('--nets', nargs='*', default=list(TORCHREID_NETS),
                        help="torchreid's builders to compare.")
    parser.add_argument('--configs', nargs='*', default=list(FASTREID_CONFIGS),
                        help="fast-reid's configs to compare, relative to --fastreid.")
    parser.add_argument('--exports', nargs='*', default=['osnet_ain_x1_0', 'sbs_R50-ibn'],
                        help='The models whose exports are compared too.')
    parser.add_argument('--image_root', required=True, help='Folder the CSVs are relative to.')
    parser.add_argument('--query', required=True, help='Query CSV.')
    parser.add_argument('--gallery', required=True, help='Gallery CSV.')
    parser.add_argument('--excluder', default='cuhk03_folders', help='The evaluation protocol.')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads of either side.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from triplet_reid.cli import startup
    startup.quiet_tensorflow()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory(prefix='peers-') as folder:
        for kind, specs in (('torchreid', args.nets), ('fastreid', args.configs)):
            for spec in specs:
                rows += measure(args, folder, kind, spec)
    print('| model | net | input | form | min cosine | mean cosine | mAP | rank-1 |')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        print('| {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            row['model'], row['net'], row['input'], row['form'], row.get('min_cosine', ''),
            row.get('mean_cosine', ''), row['mAP'], row['rank1']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'threads': args.threads, 'rows': rows}, f,
                      indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
