#!/usr/bin/env python3
"""Benchmark: the vision transformers against the peers' own code: fidelity and speed.

Fidelity. For each case, `bench/vit_peers_torch.py` builds a ViT with its
peer's code (timm's `vit_small_patch16_224` and `vit_base_patch16_224`,
saved at 224×224 and used at 256×128 with their position embeddings resized
as timm resizes them; TransReID's `vit_base_patch16_224_TransReID` at
stride 12 and `deit_small_patch16_224_TransReID`, from its
`model/backbones/vit_pytorch.py`; open_clip's CLIP ViT-B/16 with QuickGELU,
OpenAI's shape, saved whole, its image encoder used at 256×128 with its
position embeddings resized bicubically; TransReID's whole models of three of its
Market-1501 configs, from its `make_model`: the ViT-B baseline, JPM, and
JPM at stride 12 with the test features after the BNNeck; CLIP-ReID's
whole model of its person config vit_clipreid.yml, from its
`make_model_clipreid` around a CLIP of its `CLIP` class: as published, with
the test features after the BNNecks, and with its camera embedding) in a
PyTorch
environment of its own, gives it random weights with non-trivial layer
and batch norms, saves it (`.safetensors` or `.pth`) and embeds the demo
set's pixels. Here the file initialises `vit_small_16` or `vit_base_16`
(`--initial_checkpoint`'s code, `models/vit_weights.py`) or is imported as
import_model.py imports it (`models/transreid.py`, `models/clipreid.py`),
and the same pixels are embedded, then compared: the smallest and mean
cosine per image, and mAP and rank-1 of both. The exports (SavedModel,
ONNX, TFLite float32 and int8) of TransReID's JPM model at stride 12 are
compared too.

Speed. Seconds per batch of 32 at 256×128, embedding and a training step
(forward, backward, SGD on the features' mean square), here and in timm on
the same CPU threads, one after the other.

    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm open_clip_torch \\
        safetensors numpy yacs ftfy regex
    .venv/bin/python -m bench.vit_peers --torch_python /tmp/torchenv/bin/python \\
        --transreid TransReID --clipreid CLIP-ReID --json bench/results/vit_peers.json
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
TORCH_SIDE = os.path.join(ROOT, 'bench', 'vit_peers_torch.py')
# (peer, its net or config, our net, patch stride, file kind, changes to the
# config): timm's and TransReID's backbones (as --initial_checkpoint reads
# them), TransReID's whole models (as import_model.py imports them) of its
# Market-1501 configs, the last (JPM and SIE at stride 12) with the test
# features after the BNNeck (the other head), and CLIP-ReID's of its person
# config vit_clipreid.yml (its dataset uncommented, as its users do): as
# published, with the features after the BNNecks, and with its commented-out
# camera embedding (SIE) turned on. (Its baseline vit_base.yml builds the
# same image model through config/defaults_base.py.)
CASES = (('timm', 'vit_small_patch16_224', 'vit_small_16', 16, 'safetensors', {}),
         ('timm', 'vit_base_patch16_224', 'vit_base_16', 16, 'pth', {}),
         ('transreid', 'vit_base_patch16_224_TransReID', 'vit_base_16', 12, 'pth', {}),
         ('transreid', 'deit_small_patch16_224_TransReID', 'vit_small_16', 16, 'pth', {}),
         ('open_clip', 'ViT-B-16-quickgelu', 'clip_vit_base_16', 16, 'safetensors', {}),
         ('transreid_model', 'configs/Market/vit_base.yml', 'vit_base_16', 16, 'pth', {}),
         ('transreid_model', 'configs/Market/vit_jpm.yml', 'vit_base_16', 16, 'pth', {}),
         ('transreid_model', 'configs/Market/vit_transreid_stride.yml', 'vit_base_16', 12,
          'pth', {"NECK_FEAT: 'before'": "NECK_FEAT: 'after'"}),
         ('clipreid_model', 'configs/person/vit_clipreid.yml', 'clipreid_vit_base_16', 16,
          'pth', {"#   NAMES: ('market1501')": "  NAMES: ('market1501')"}),
         ('clipreid_model', 'configs/person/vit_clipreid.yml', 'clipreid_vit_base_16', 16,
          'pth', {"#   NAMES: ('market1501')": "  NAMES: ('market1501')",
                  "NECK_FEAT: 'before'": "NECK_FEAT: 'after'"}),
         ('clipreid_model', 'configs/person/vit_clipreid.yml', 'clipreid_vit_base_16', 16,
          'pth', {"#   NAMES: ('market1501')": "  NAMES: ('market1501')",
                  '# SIE_CAMERA: True': 'SIE_CAMERA: True', '# SIE_COE : 1.0': 'SIE_COE : 1.0'}))

# The whole models, as import_model.py imports them.
WHOLE_MODELS = ('transreid_model', 'clipreid_model')

SIZE = (256, 128)
# The batch of the speed measurements (bench.peers embeds in batches of 32 too).
BATCH = 32


def demo_pixels(every):
    """(query pids, query fids, gallery pids, gallery fids, pixels (N, 256,
    128, 3) uint8, cameras (N,) from 0): the demo query and test images of
    every `every`-th identity, resized as embed.py resizes them, and their
    Market-1501 cameras numbered from 0, as TransReID and CLIP-ReID number
    them."""
    import tensorflow as tf
    from triplet_reid import common
    from triplet_reid.inputs.images import load_image
    demo = os.path.join(ROOT, 'data', 'demo')
    query_pids, query_fids = common.load_dataset(os.path.join(demo, 'demo_query.csv'), demo)
    gallery_pids, gallery_fids = common.load_dataset(os.path.join(demo, 'demo_test.csv'), demo)
    kept = np.unique(query_pids)[::every]
    query = np.isin(query_pids, kept)
    gallery = np.isin(gallery_pids, kept)
    query_pids, query_fids = query_pids[query], query_fids[query]
    gallery_pids, gallery_fids = gallery_pids[gallery], gallery_fids[gallery]
    pixels = np.stack([tf.cast(tf.round(tf.clip_by_value(load_image(
        os.path.join(demo, f), SIZE), 0, 255)), tf.uint8).numpy()
        for f in np.concatenate([query_fids, gallery_fids])])
    from triplet_reid.inputs.unlabelled import cameras_from_paths
    cameras = cameras_from_paths(np.concatenate([query_fids, gallery_fids]), r'_c(\d+)')
    return (query_pids, query_fids, gallery_pids, gallery_fids, pixels,
            cameras.astype(np.int32) - 1)


def ours(net, stride, path):
    """The body `net` at `stride`, initialised from `path` as train.py does."""
    from triplet_reid.models.build import build_model, load_body_weights
    model, body = build_model(net, 'pooled', 384 if 'small' in net else 768,
                              input_size=SIZE, patch_stride=stride)
    load_body_weights(net, body, path)
    return model, body


def imported(peer, weights, config, root):
    """(model, None, its args.json) that import_model.py imports from
    TransReID's or CLIP-ReID's (`peer`) `weights` and `config`."""
    import shutil
    from triplet_reid.models import clipreid, transreid
    from triplet_reid.models.inference import load_experiment
    shutil.rmtree(root, ignore_errors=True)
    if peer == 'transreid_model':
        transreid.import_transreid(weights, config, root)
    else:
        clipreid.import_clipreid(weights, config, root)
    model, train_args, _ = load_experiment(root)
    return model, None, train_args


def fidelity(args, folder, data, case):
    """The rows of one case (and its exports' when it is --exports')."""
    import tensorflow as tf
    from triplet_reid import excluders
    from triplet_reid.evaluation import metrics
    from bench.peers import cosines, exported_forms, in_batches
    from triplet_reid.models.inference import inference_function

    peer, their_net, net, stride, kind, changes = case
    query_pids, query_fids, gallery_pids, gallery_fids, pixels, cameras = data
    weights = os.path.join(folder, '{}_{}.{}'.format(peer, os.path.basename(their_net), kind))
    output = os.path.join(folder, 'theirs.npz')
    command = [args.torch_python, TORCH_SIDE, '--kind', peer, '--size', str(SIZE[0]),
               str(SIZE[1]), '--stride', str(stride), '--pixels',
               os.path.join(folder, 'pixels.npz'), '--weights_out', weights, '--output', output,
               '--threads', str(args.threads)]
    source = args.clipreid if peer.startswith('clipreid') else args.transreid
    if peer.startswith(('transreid', 'clipreid')):
        command += ['--source', source]
    if peer in WHOLE_MODELS:
        config = os.path.join(folder, os.path.basename(their_net))
        with open(os.path.join(source, their_net)) as f:
            text = f.read()
        for old, new in changes.items():
            if old not in text:
                raise SystemExit('{} no longer holds `{}`'.format(their_net, old))
            text = text.replace(old, new)
        with open(config, 'w') as f:
            f.write(text)
        command += ['--config', config]
    else:
        command += ['--net', their_net]
    subprocess.run(command, check=True)
    theirs = np.load(output)['features']
    if peer in WHOLE_MODELS:
        model, body, train_args = imported(peer, weights, config,
                                           os.path.join(folder, 'imported'))
    else:
        (model, body), train_args = ours(net, stride, weights), {}
    excluder = excluders.load('market1501', query_fids, gallery_fids)
    count = len(query_fids)

    def figures(embs):
        result = metrics.evaluate(query_pids, query_fids, gallery_pids, metrics.metric_distances(
            embs[:count], embs[count:], 'euclidean'), excluder)
        return {'mAP': round(100 * float(result['mAP']), 2),
                'rank1': round(100 * float(result['CMC'][0]), 2)}

    fields = dict(peer=peer, their_net=their_net, net=net, patch_stride=stride, file=kind)
    rows = [dict(fields, form='peer (PyTorch)', **figures(theirs))]

    def add(form, embs):
        cos = cosines(embs, theirs)
        rows.append(dict(fields, form=form, min_cosine=round(float(cos.min()), 6),
                         mean_cosine=round(float(cos.mean()), 6), **figures(embs)))

    floats = pixels.astype(np.float32)
    # A camera embedding (SIE) takes each image's camera, as the peer's test does.
    table = train_args.get('sie_cameras') if body is None else None
    camera_rows = None if table is None else cameras
    if body is None:
        forward = inference_function(model)
    else:
        forward = tf.function(lambda x: body(x, training=False))
    add('imported (Keras)', in_batches(lambda *x: forward(*x).numpy(), floats, camera_rows))
    if case == CASES[args.exports]:
        export_args = {'net_input_height': SIZE[0], 'net_input_width': SIZE[1],
                       'antialias': True, 'sie_cameras': table}
        for form, function in exported_forms(model, export_args, folder, net, floats,
                                             threads=args.threads).items():
            add(form, in_batches(function, floats, camera_rows))
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def our_speed(net, repeats, threads):
    """Seconds per batch here: embedding, and a training step."""
    import tensorflow as tf
    from triplet_reid.models.build import build_model
    _, body = build_model(net, 'pooled', 384 if 'small' in net else 768, input_size=SIZE)
    x = tf.random.uniform((BATCH,) + SIZE + (3,), 0, 255)
    embed = tf.function(lambda x: body(x, training=False))
    optimizer = tf.keras.optimizers.SGD(1e-3)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(body(x, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, body.trainable_variables),
                                      body.trainable_variables))

    def timed(function):
        function(x)
        start = time.perf_counter()
        for _ in range(repeats):
            out = function(x)
        if out is not None:
            out.numpy()
        return (time.perf_counter() - start) / repeats
    return timed(embed), timed(step)


def speed(args):
    rows = []
    for their_net, net in (('vit_small_patch16_224', 'vit_small_16'),
                           ('vit_base_patch16_224', 'vit_base_16')):
        done = subprocess.run([args.torch_python, TORCH_SIDE, '--kind', 'timm', '--net',
                               their_net, '--speed', str(BATCH), str(args.repeats),
                               '--threads', str(args.threads)], check=True,
                              capture_output=True, text=True)
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        embed, train = our_speed(net, args.repeats, args.threads)
        row = dict(net=net, peer='timm ' + their_net, batch=BATCH, input='256x128',
                   embed_s=round(embed, 4), peer_embed_s=theirs['embed_s'],
                   embed_ratio=round(theirs['embed_s'] / embed, 2), train_s=round(train, 4),
                   peer_train_s=theirs['train_s'], train_ratio=round(theirs['train_s'] / train, 2))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--torch_python', required=True, help='Python of a PyTorch environment.')
    parser.add_argument('--transreid', required=True, help='A checkout of damo-cv/TransReID.')
    parser.add_argument('--clipreid', required=True, help='A checkout of Syliz517/CLIP-ReID.')
    parser.add_argument('--every', type=int, default=8,
                        help='Every how many demo identities to use.')
    parser.add_argument('--exports', type=int, default=7,
                        help='The case whose exports to compare (an index of CASES).')
    parser.add_argument('--peers', nargs='+', default=None,
                        choices=sorted({case[0] for case in CASES}),
                        help='Only the cases of these peers (all by default).')
    parser.add_argument('--repeats', type=int, default=3, help='Timed batches of each speed.')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads of either side.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from triplet_reid.cli import startup
    startup.quiet_tensorflow()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    data = demo_pixels(args.every)
    rows = []
    with tempfile.TemporaryDirectory(prefix='vit-peers-') as folder:
        np.savez(os.path.join(folder, 'pixels.npz'), pixels=data[-2], cameras=data[-1])
        for case in CASES:
            if args.peers is None or case[0] in args.peers:
                rows += fidelity(args, folder, data, case)
    speeds = speed(args)
    print('| peer | net | ours | stride | file | form | min cosine | mean cosine | mAP | '
          'rank-1 |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        print('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            row['peer'], row['their_net'], row['net'], row['patch_stride'], row['file'],
            row['form'], row.get('min_cosine', ''), row.get('mean_cosine', ''), row['mAP'],
            row['rank1']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'threads': args.threads,
                       'images': int(len(data[-2])), 'rows': rows, 'speed': speeds}, f,
                      indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
