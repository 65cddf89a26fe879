#!/usr/bin/env python3
"""Benchmark: torchreid's trained OSNet imported (import_model.py) against torchreid itself.

For each model-zoo file, `bench/torchreid_embed.py` embeds the query and
gallery images with torchreid's own `osnet.py` in PyTorch (in a PyTorch
environment of its own, `--torch_python`), resizing with PIL's bilinear
filter as torchreid tests; then the imported experiment embeds the same
images here in several ways, each compared with torchreid's features (the
smallest and mean per-image cosine) and evaluated (mAP, rank-1):

  - `keras, same pixels`: the Keras model on exactly torchreid's resized pixels;
  - `keras padding`: the same, with the OSNet padding of experiments before
    --net_padding (Keras' 'same'), to show what the padding is worth;
  - `embed.py pipeline`: the project's own decoding and antialiased resize,
    as embed.py does it (what a user gets);
  - `SavedModel`, `ONNX`, `TFLite float32`: the exports of export.py, on
    torchreid's pixels.

It also times embedding at 256×128, batch 64 (images per second) on this
CPU for x0.25 and x1.0 against torchreid's in PyTorch, in the same run
(x1.0 with random weights where no file is given).

    /tmp/torchenv/bin/pip install torch numpy pillow
    .venv/bin/python data/convert.py cuhk03_folders --dataset_root D/detected --output_dir C
    .venv/bin/python -m bench.torchreid --torch_python /tmp/torchenv/bin/python \\
        --osnet_py torchreid/models/osnet.py --image_root D/detected \\
        --query C/cuhk03_folders_query.csv --gallery C/cuhk03_folders_test.csv \\
        --excluder cuhk03_folders --weights osnet_x0_25_msmt17.pth osnet_x0_25_market1501.pth \\
        --json bench/results/torchreid_cuhk03.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SIDE = os.path.join(ROOT, 'bench', 'torchreid_embed.py')
BATCH = 64


def torch_side(args, net, weights, output, csvs):
    command = [args.torch_python, TORCH_SIDE, '--osnet_py', args.osnet_py, '--net', net,
               '--image_root', args.image_root, '--output', output, '--batch_size', str(BATCH),
               '--threads', str(args.threads), '--csv'] + csvs
    if weights:
        command += ['--weights', weights]
    subprocess.run(command, check=True)
    return np.load(output)


def in_batches(function, pixels):
    return np.concatenate([np.asarray(function(pixels[i:i + BATCH]))
                           for i in range(0, len(pixels), BATCH)])


def images_per_second(function, pixels, repeats=3):
    """The best of `repeats` passes over `pixels` in full batches."""
    full = pixels[:len(pixels) // BATCH * BATCH] if len(pixels) >= BATCH else pixels
    function(full[:BATCH])
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        in_batches(function, full)
        best = min(best, time.perf_counter() - start)
    return len(full) / best


def measure(args, weights, folder):
    """The rows of one model-zoo file."""
    import tensorflow as tf
    from triplet_reid import common
    from triplet_reid import excluders
    from triplet_reid.evaluation import metrics
    from triplet_reid.models import zoo
    from triplet_reid.models import torch_weights
    from triplet_reid.models.inference import embed_files, inference_function, load_experiment
    from triplet_reid.models.build import build_model
    from bench.peers import cosines, exported_forms

    name = os.path.splitext(os.path.basename(weights))[0]
    root = os.path.join(folder, name)
    stored = zoo.import_torchreid(weights, root)
    reference = torch_side(args, stored['model_name'].replace('osnet', 'osnet_x1_0')
                           if stored['model_name'] == 'osnet' else stored['model_name'],
                           weights, os.path.join(folder, name + '.npz'),
                           [args.query, args.gallery])
    pixels, theirs = reference['pixels'].astype(np.float32), reference['features']
    query_pids, query_fids = common.load_dataset(args.query, None)
    gallery_pids, gallery_fids = common.load_dataset(args.gallery, None)
    excluder = excluders.load(args.excluder, query_fids, gallery_fids)
    count = len(query_fids)

    def figures(embs):
        result = metrics.evaluate(query_pids, query_fids, gallery_pids, metrics.metric_distances(
            embs[:count], embs[count:], 'euclidean'), excluder)
        return {'mAP': round(100 * float(result['mAP']), 2),
                'rank1': round(100 * float(result['CMC'][0]), 2)}

    rows = [dict(model=name, form='torchreid (PyTorch)', **figures(theirs))]

    def add(form, embs):
        cos = cosines(embs, theirs)
        rows.append(dict(model=name, form=form, min_cosine=round(float(cos.min()), 6),
                         mean_cosine=round(float(cos.mean()), 6), **figures(embs)))

    model, train_args, _ = load_experiment(root)
    forward = inference_function(model)
    add('keras, same pixels', in_batches(lambda x: forward(tf.constant(x)).numpy(), pixels))
    legacy, legacy_body = build_model(stored['model_name'], 'fc_bn_relu', 512, padding='keras')
    zoo.assign(legacy, legacy_body, torch_weights.read_state_dict(weights), weights)
    legacy_forward = inference_function(legacy)
    add('keras padding (before --net_padding)',
        in_batches(lambda x: legacy_forward(tf.constant(x)).numpy(), pixels))
    fids = np.concatenate([query_fids, gallery_fids])
    add('embed.py pipeline (TF decode, antialiased resize)',
        embed_files(model, train_args, fids, args.image_root, batch_size=BATCH)[0])

    for form, function in exported_forms(model, train_args, folder, name, pixels, int8=False,
                                         threads=args.threads).items():
        add(form, in_batches(function, pixels))
    speed = {'model': stored['model_name'], 'torch_images_per_second': round(float(
        reference['images_per_second']), 1), 'keras_images_per_second': round(
        images_per_second(lambda x: forward(tf.constant(x)).numpy(), pixels), 1)}
    return rows, speed, pixels


def speed_of_random(args, net, torch_net, pixels, folder):
    """Images per second of `net` with random weights, here and in torchreid."""
    import tensorflow as tf
    from triplet_reid.models.inference import inference_function
    from triplet_reid.models.build import build_model
    model, _ = build_model(net, 'fc_bn_relu', 512)
    forward = inference_function(model)
    csv = os.path.join(folder, 'timing.csv')
    with open(args.query) as f, open(csv, 'w') as out:
        out.writelines(f.readlines()[:2 * BATCH + 1])
    reference = torch_side(args, torch_net, None, os.path.join(folder, 'timing.npz'), [csv])
    return {'model': net + ' (random weights)', 'torch_images_per_second': round(float(
        reference['images_per_second']), 1), 'keras_images_per_second': round(
        images_per_second(lambda x: forward(tf.constant(x)).numpy(), pixels[:2 * BATCH]), 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--torch_python', required=True, help='Python of a PyTorch environment.')
    parser.add_argument('--osnet_py', required=True, help="torchreid's models/osnet.py.")
    parser.add_argument('--weights', nargs='+', required=True, help='Model-zoo .pth files.')
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

    rows, speeds = [], []
    with tempfile.TemporaryDirectory(prefix='torchreid-') as folder:
        for weights in args.weights:
            found, speed, pixels = measure(args, weights, folder)
            rows += found
            speeds.append(speed)
        if not any(s['model'] == 'osnet' for s in speeds):
            speeds.append(speed_of_random(args, 'osnet', 'osnet_x1_0', pixels, folder))
    print('| model | form | min cosine | mean cosine | mAP | rank-1 |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print('| {} | {} | {} | {} | {} | {} |'.format(
            row['model'], row['form'], row.get('min_cosine', ''), row.get('mean_cosine', ''),
            row['mAP'], row['rank1']))
    print('\n| net | torchreid (PyTorch) images/s | imported (Keras) images/s |')
    print('|---|---|---|')
    for speed in speeds:
        print('| {} | {} | {} |'.format(speed['model'], speed['torch_images_per_second'],
                                        speed['keras_images_per_second']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'threads': args.threads, 'batch': BATCH,
                       'rows': rows, 'speed': speeds}, f, indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
