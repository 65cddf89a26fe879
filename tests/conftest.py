"""Shared fixtures and helpers: the repository on sys.path as the package
triplet_reid, a tiny generated
dataset, the tiny training command, and readers of what training leaves in
an experiment root. Test modules import helpers from here, never from each
other."""

import argparse
import importlib.util
import inspect
import logging
import os
import random
import re
import signal
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# The checkout is the package triplet_reid, as the tests import it (checkout.py).
import checkout  # noqa: E402
checkout.register()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


# Test order and process-wide state.
###


def pytest_addoption(parser):
    parser.addoption('--test-order', default='file', metavar='file|reverse|random[:SEED]',
                     help='run the collected tests in file order, in reverse, or shuffled with '
                          'SEED (default: a new seed, printed); proves them independent of order')


def pytest_configure(config):
    # A shuffle's seed is drawn once. Under pytest-xdist (make test's -n)
    # every worker must collect in one order: the seed travels to them as the
    # run's id, which xdist hands to each.
    if config.getoption('--test-order') != 'random':
        return
    workerinput = getattr(config, 'workerinput', None)
    if workerinput is not None:
        seed = int(workerinput['testrunuid'], 16) % 2 ** 32
    else:
        seed = random.SystemRandom().randrange(2 ** 32)
        if getattr(config.option, 'testrunuid', False) is None:
            config.option.testrunuid = '{:032x}'.format(seed)
    config.option.test_order = 'random:{}'.format(seed)


def pytest_collection_modifyitems(config, items):
    order = config.getoption('--test-order')
    kind, _, seed = order.partition(':')
    if kind == 'reverse':
        items.reverse()
    elif kind == 'random':
        seed = int(seed) if seed else random.SystemRandom().randrange(2 ** 32)
        config.test_order_line = 'test order: random:{}'.format(seed)
        random.Random(seed).shuffle(items)
    elif kind != 'file':
        raise pytest.UsageError('--test-order takes file, reverse or random[:SEED], not '
                                '{!r}'.format(order))


def pytest_terminal_summary(terminalreporter, config):
    # At the end, where a failing run is read: the order, with a shuffle's seed.
    order = getattr(config, 'test_order_line', 'test order: ' + config.getoption('--test-order'))
    if not order.endswith(': file'):
        terminalreporter.write_line(order)


@pytest.fixture(autouse=True)
def process_state():
    """Hands each test the process-wide state it found, whatever it changed.

    train.main, called in-process, switches TensorFlow's op determinism on
    for --deterministic (it then stays on, and refuses unseeded random ops),
    sets Keras' global dtype policy for --mixed_precision, seeds Python's,
    NumPy's and TensorFlow's global generators, and points the root logger
    at the experiment's train.log; without this, a test's outcome would
    depend on the tests that ran before it. TensorFlow's thread pools,
    fixed once it runs, cannot be handed back: they change speed only.
    """
    loaded = 'tensorflow' in sys.modules
    determinism, policy = (op_determinism(), global_policy()) if loaded else (False, 'float32')
    root = logging.getLogger()
    handlers, level = own_handlers(root), root.level
    python_random, numpy_random = random.getstate(), np.random.get_state()
    yield
    random.setstate(python_random)
    np.random.set_state(numpy_random)
    for handler in own_handlers(root):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    if 'tensorflow' in sys.modules:
        from tensorflow.python.framework import config
        if op_determinism() != determinism:
            (config.enable_op_determinism if determinism else config.disable_op_determinism)()
        if global_policy() != policy:
            import keras
            keras.mixed_precision.set_global_policy(policy)


def own_handlers(logger):
    """The handlers of `logger` but pytest's, which pytest swaps at each phase of a test."""
    return [h for h in logger.handlers if not type(h).__module__.startswith('_pytest')]


def op_determinism():
    from tensorflow.python.framework import config
    return config.is_op_determinism_enabled()


def global_policy():
    import keras
    return keras.mixed_precision.global_policy().name


def write_file(path, content, mode='w'):
    """Writes `content` (text, or bytes with mode 'wb') to `path`; returns the path as a string."""
    with open(path, mode) as f:
        f.write(content)
    return str(path)


def write_image(path, array):
    """Writes a uint8 (H, W, C) array as JPEG or PNG, chosen by the file name."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith('.png'):
        data = tf.io.encode_png(array).numpy()
    else:
        data = tf.io.encode_jpeg(array, quality=95).numpy()
    with open(path, 'wb') as f:
        f.write(data)


def make_dataset(root, num_ids=8, images_per_id=5, size=(32, 16), seed=0, single_image_ids=0,
                 folder='train'):
    """A dataset of flat-coloured identities with noise, learnable in a few steps.

    Identity i is a two-colour figure; the background noise differs per image.
    The last `single_image_ids` identities have a single image each. Image j
    of an identity is seen by camera j % 3 + 1, named as in Market-1501.

    Returns:
        The CSV path `root/<folder>.csv`; images live under `root/<folder>`.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_ids):
        pid = '{:04d}'.format(i + 1)
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        count = 1 if i >= num_ids - single_image_ids else images_per_id
        for j in range(count):
            image = rng.uniform(0, 255, size + (3,))
            h = size[0]
            image[h // 8:h // 2, 3:-3] = top + rng.normal(0, 20, 3)
            image[h // 2:h - h // 8, 3:-3] = bottom + rng.normal(0, 20, 3)
            fid = '{}/{}_c{}s1_{:06d}_00.jpg'.format(folder, pid, j % 3 + 1, j)
            write_image(os.path.join(root, fid), np.clip(image, 0, 255).astype(np.uint8))
            rows.append('{},{}\n'.format(pid, fid))
    csv_path = os.path.join(root, folder + '.csv')
    with open(csv_path, 'w') as f:
        f.writelines(rows)
    return csv_path


@pytest.fixture
def tiny_dataset(tmp_path):
    """(csv path, image root) of an 8-identity, 5-images-each 32×16 dataset."""
    root = str(tmp_path / 'data')
    return make_dataset(root), root


# Training runs and what they leave behind.
###

def base_args(root, csv_path, image_root, iterations=30, *extra):
    return ['--experiment_root', root, '--train_set', csv_path, '--image_root', image_root,
            '--model_name', 'tiny', '--head_name', 'fc1024', '--embedding_dim', '16',
            '--batch_p', '4', '--batch_k', '4', '--net_input_height', '32',
            '--net_input_width', '16', '--loading_threads', '2', '--seed', '3',
            '--learning_rate', '1e-3', '--train_iterations', str(iterations),
            '--checkpoint_frequency', '10'] + list(extra)


def logged_iterations(root):
    with open(os.path.join(root, 'train.log')) as f:
        return [(int(m.group(1)), float(m.group(2))) for m in re.finditer(
            r'iter:\s*(\d+), loss min\|avg\|max: [\d.]+\|([\d.]+)\|', f.read())]


def checkpoint_steps(root):
    return sorted(int(m.group(1)) for name in os.listdir(root)
                  for m in [re.match(r'checkpoint-(\d+)\.index$', name)] if m)


class InterruptAt(logging.Handler):
    """Sends this process a signal once the log reports iteration `step`."""

    def __init__(self, step, signum):
        super().__init__()
        self.pattern = re.compile(r'iter:\s*{},'.format(step))
        self.signum = signum

    def emit(self, record):
        if self.pattern.search(record.getMessage()):
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def interrupt_at():
    handlers = []

    def install(step, signum=signal.SIGINT):
        handler = InterruptAt(step, signum)
        logging.getLogger('train').addHandler(handler)
        handlers.append(handler)
    yield install
    for handler in handlers:
        logging.getLogger('train').removeHandler(handler)


def validation_csvs(image_root):
    """Query (each identity's first image) and gallery (the rest) CSVs of
    six identities that training never sees."""
    csv_path = make_dataset(image_root, num_ids=6, images_per_id=4, seed=11, folder='val')
    rows = open(csv_path).read().splitlines()
    query, gallery = os.path.join(image_root, 'q.csv'), os.path.join(image_root, 'g.csv')
    with open(query, 'w') as f:
        f.writelines(row + '\n' for i, row in enumerate(rows) if i % 4 == 0)
    with open(gallery, 'w') as f:
        f.writelines(row + '\n' for i, row in enumerate(rows) if i % 4 != 0)
    return query, gallery


def val_args(query, gallery, every):
    return ['--val_query', query, '--val_gallery', gallery, '--val_excluder', 'market1501',
            '--val_every', str(every)]


def scalars(root, prefix):
    """{tag: {step: value}} of the TensorBoard scalars under `prefix` in `root`."""
    import tensorflow as tf
    found = {}
    for name in os.listdir(root):
        if name.startswith('events.out'):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    if value.tag.startswith(prefix):
                        found.setdefault(value.tag, {})[event.step] = float(
                            tf.make_ndarray(value.tensor))
    return found


# What the browser reports of a page: its queries, its images and how many of
# them failed to load, its threshold lines and scripts. The page is opened in
# an iframe of this harness, which the flag --allow-file-access-from-files
# lets read it; --dump-dom then prints the harness with the counts filled in.
HARNESS = '''<!DOCTYPE html><html><body><pre id="out">pending</pre>
<iframe id="page" src="{src}" width="1200" height="900" onload="
  var d = document.getElementById('page').contentDocument;
  var images = Array.from(d.images);
  document.getElementById('out').textContent = JSON.stringify({{
    title: d.title,
    queries: d.querySelectorAll('.query').length,
    images: images.length,
    broken: images.filter(function (i) {{ return !i.complete || i.naturalWidth === 0; }}).length,
    external: images.filter(function (i) {{ return !i.src.startsWith('data:'); }}).length,
    thresholds: d.querySelectorAll('.threshold').length,
    scripts: d.scripts.length}});
"></iframe></body></html>'''


def chromium():
    """The path of a Chromium, or None. `make test` installs Debian's where it can."""
    import shutil
    return next(filter(None, map(shutil.which, ('chromium', 'chromium-browser',
                                                'google-chrome'))), None)


def browse(page, tmp_path):
    """Opens the HTML file `page` in headless Chromium and returns (the
    counts of HARNESS as a dict, Chromium's log). Skips without Chromium."""
    import json
    import subprocess
    browser = chromium()
    if browser is None:
        pytest.skip('no Chromium to test the page in (Debian: apt install chromium)')
    harness = tmp_path / 'harness.html'
    harness.write_text(HARNESS.format(src=os.path.relpath(page, tmp_path)))
    done = subprocess.run(
        [browser, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-quic', '--allow-file-access-from-files', '--enable-logging=stderr',
         '--user-data-dir=' + str(tmp_path / 'chromium-profile'),
         '--virtual-time-budget=10000', '--dump-dom', harness.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1) != 'pending', done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(found.group(1).replace('&quot;', '"')), done.stderr


# Data and parsers that several test modules build.
###

def market_like(rng, num_ids=12, cams=4, per_cam=3, dim=8, quantize=False):
    fids, pids = [], []
    for p in range(1, num_ids + 1):
        for c in range(1, cams + 1):
            for k in range(int(rng.integers(0, per_cam + 1))):
                fids.append('bounding_box_test/{:04d}_c{}s1_{:06d}_0{}.jpg'.format(p, c, k, k))
                pids.append('{:04d}'.format(p))
    for k in range(5):
        fids.append('bounding_box_test/-1_c1s1_{:06d}_00.jpg'.format(k))
        pids.append('-1')
    pids, fids = np.array(pids), np.array(fids)
    centres = rng.normal(size=(num_ids + 2, dim))
    emb = centres[[int(p) if p != '-1' else 0 for p in pids]] + rng.normal(size=(len(pids), dim))
    if quantize:
        emb = np.round(emb)  # Many exact ties.
    return pids, fids, emb.astype(np.float32)


def write_h5(path, **arrays):
    import h5py
    with h5py.File(path, 'w') as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
    return str(path)


def write_market_like(tmp_path, seed=2):
    """A Market-like query and gallery under `tmp_path`: images, q.csv,
    g.csv, q.h5 and g.h5. Returns (q_pids, q_fids, q_emb), (g_pids, g_fids, g_emb)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    g_pids, g_fids, g_emb = market_like(rng, num_ids=12, cams=4, per_cam=3)
    q_pids, q_fids = g_pids[::7], np.char.replace(g_fids[::7], 'bounding_box_test', 'query')
    q_emb = g_emb[::7] + 0.1
    for fid in list(g_fids) + list(q_fids):
        (tmp_path / fid).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(tmp_path / fid)
    for name, pids, fids, emb in (('q', q_pids, q_fids, q_emb), ('g', g_pids, g_fids, g_emb)):
        (tmp_path / (name + '.csv')).write_text(
            ''.join('{},{}\n'.format(p, f) for p, f in zip(pids, fids)))
        write_h5(tmp_path / (name + '.h5'), emb=emb)
    return (q_pids, q_fids, q_emb), (g_pids, g_fids, g_emb)


class Captured(Exception):
    pass


def parser_of(script, monkeypatch):
    """The parser that `script`'s main() builds, taken as it parses."""
    spec = importlib.util.spec_from_file_location(
        'docs_check_' + re.sub(r'\W', '_', script), os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def capture(self, *args, **kwargs):
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    with pytest.raises(Captured) as captured:
        if inspect.signature(module.main).parameters:
            module.main([])
        else:
            module.main()
    monkeypatch.undo()
    return captured.value.args[0]


def touch(root, relative_paths):
    for path in relative_paths:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, 'wb').close()


def write_cuhk03(root, rng, num_campuses=2, num_persons=3):
    """A cuhk-03.mat as MATLAB 7.3 writes it (HDF5, cells as object references,
    arrays transposed), plus both new-protocol files. Returns the images."""
    import h5py
    from scipy.io import savemat
    from triplet_reid.data import convert
    images = {}
    os.makedirs(root / 'cuhk03_release')
    with h5py.File(root / 'cuhk03_release' / 'cuhk-03.mat', 'w') as f:
        refs = f.create_group('#refs#')

        def store(array):
            return refs.create_dataset(str(len(refs)), data=array).ref

        for image_type in ('detected', 'labeled'):
            campuses = []
            for campus in range(num_campuses):
                cells = np.empty((10, num_persons), dtype=h5py.ref_dtype)
                for person in range(num_persons):
                    for index in range(10):
                        if index in (4, 9) and person == 0:
                            cells[index, person] = store(np.zeros(2, np.uint64))
                            continue
                        image = rng.integers(0, 256, (6 + index, 4, 3), dtype=np.uint8)
                        images[image_type, convert.cuhk03_image_name(campus, person, index)] = image
                        cells[index, person] = store(image.T)
                campuses.append(store(cells))
            f.create_dataset(image_type, data=np.array([campuses], dtype=h5py.ref_dtype))
    for image_type in ('detected', 'labeled'):
        names = sorted(name for kind, name in images if kind == image_type)
        labels = [num_persons * (int(name[0]) - 1) + int(name[2:5]) for name in names]
        train = [i + 1 for i, label in enumerate(labels) if label <= 2]
        test = [i + 1 for i, label in enumerate(labels) if label > 2]
        savemat(root / 'cuhk03_new_protocol_config_{}.mat'.format(image_type), {
            'filelist': np.array(names, dtype=object)[:, None],
            'labels': np.array(labels, float)[:, None],
            'camId': np.array([int(name[6]) for name in names], float)[:, None],
            'train_idx': np.array(train, float)[:, None],
            'query_idx': np.array(test[::4], float)[:, None],
            'gallery_idx': np.array([i for i in test if i not in test[::4]], float)[:, None]})
    return images


def run_tflite(path, batch, cameras=None):
    """The outputs of the TensorFlow Lite model `path` on `batch` (and, for a
    model with a camera embedding, the images' `cameras`), run by LiteRT's
    interpreter at the batch's shape."""
    from triplet_reid.serving.exported import run_tflite as run
    return run(path, batch, cameras)
