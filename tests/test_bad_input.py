"""Every bad input gets one clear error, a non-zero exit and nothing half-written."""

import errno
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import embed
from triplet_reid import train
from conftest import ROOT, base_args, checkpoint_steps, write_image


def refuse(tmp_path, csv_path, image_root, match, *extra):
    """train.py refuses with `match` and leaves no experiment root behind."""
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match=match):
        train.main(base_args(root, csv_path, image_root, 2, *extra))
    assert not os.path.exists(root)


@pytest.mark.parametrize('content, match', [
    (None, 'cannot read the dataset CSV'),
    ('', 'is empty'),
    ('identity,path\n0001,train/a.jpg\n', 'looks like a header line'),
    ('0001,train/a.jpg,x\n', 'expected 2 columns'),
    (b'0001,train/\xe9.jpg\n', 'not valid UTF-8'),
    ('0001,train/missing.jpg\n', r'1 of the 1 images .* are missing'),
    ('0001,train/a.jpg\n0001,/data/train/b.jpg\n', r'line 2: `/data/train/b.jpg` is an absolute '
     r'path'),
])
def test_bad_csv(tmp_path, content, match):
    path = tmp_path / 'train.csv'
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    refuse(tmp_path, str(path), str(tmp_path), match)


def corrupt(image_root, csv_path, kind):
    """Replaces the first image of the CSV by a broken file; returns its fid."""
    fid = open(csv_path).readline().strip().split(',')[1]
    path = os.path.join(image_root, fid)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write({'truncated': data[:len(data) // 2], 'garbage': os.urandom(500),
                 'text': b'this is not an image\n', 'empty': b''}[kind])
    return fid


@pytest.mark.parametrize('kind', ['truncated', 'garbage', 'text', 'empty'])
def test_corrupt_image_names_the_file(tmp_path, tiny_dataset, kind):
    csv_path, image_root = tiny_dataset
    fid = corrupt(image_root, csv_path, kind)
    refuse(tmp_path, csv_path, image_root, r'1 of the 40 images .* cannot be decoded .*{}.*'
           r'--skip_corrupt_images'.format(fid))


def test_skip_corrupt_images(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    corrupt(image_root, csv_path, 'garbage')
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2, '--skip_corrupt_images')) == 0
    assert 'Skipping 1 of the 40 images that cannot be decoded' in open(
        os.path.join(root, 'train.log')).read()


def test_images_that_are_no_regular_files_are_never_opened(tmp_path, tiny_dataset):
    # A link to /dev/zero and a pipe among the images: reading either never
    # ends, so they are refused by name (or skipped) before anything reads them.
    from triplet_reid.inputs.images import decodable_mask
    csv_path, image_root = tiny_dataset
    fids = [line.strip().split(',')[1] for line in open(csv_path)][:4]
    os.remove(os.path.join(image_root, fids[0]))
    os.symlink('/dev/zero', os.path.join(image_root, fids[0]))
    os.remove(os.path.join(image_root, fids[2]))
    os.mkfifo(os.path.join(image_root, fids[2]))
    with pytest.raises(cli.UserError, match=r'2 of the 4 images .* cannot be decoded .*not a '
                                            r'regular file.*`{}`, `{}`'.format(fids[0], fids[2])):
        decodable_mask(np.array(fids), image_root, skip=False)
    assert list(decodable_mask(np.array(fids), image_root, skip=True)) == [False, True, False,
                                                                           True]


def test_huge_images_are_refused_before_decoding(tmp_path, tiny_dataset):
    from PIL import Image
    csv_path, image_root = tiny_dataset
    # 30 million pixels of one colour: a small file, and about 360 MB as float32.
    huge = os.path.join(image_root, 'huge.png')
    Image.new('RGB', (6000, 5000), (200, 30, 30)).save(huge)
    assert os.path.getsize(huge) < 1_000_000
    with open(csv_path, 'a') as f:
        f.write('0001,huge.png\n')
    refuse(tmp_path, csv_path, image_root, r'1 of the 41 images .* have more than 25000000 '
           r'pixels, for example `huge.png`.*--max_image_pixels')
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2, '--skip_corrupt_images')) == 0
    assert 'Skipping 1 of the 41 images with more than 25000000 pixels' in open(
        os.path.join(root, 'train.log')).read()
    # The limit is a flag: with a lower one the ordinary images are too large as well.
    ordinary = csv_path.replace('.csv', '_ordinary.csv')
    with open(csv_path) as f, open(ordinary, 'w') as out:
        out.writelines(line for line in f if 'huge.png' not in line)
    with pytest.raises(cli.UserError, match='40 of the 40 images .* more than 100 pixels.*'
                       'drop their rows'):
        embed.main(['--experiment_root', root, '--dataset', ordinary, '--quiet',
                    '--max_image_pixels', '100'])


def test_grayscale_rgba_png_and_single_image_identity_train(tmp_path):
    root = str(tmp_path / 'data')
    rng = np.random.default_rng(0)
    rows = []
    for pid, (channels, ext, count) in enumerate([(1, 'png', 3), (4, 'png', 3), (1, 'jpg', 3),
                                                  (3, 'png', 1)], start=1):
        for j in range(count):
            fid = '{:04d}_{}.{}'.format(pid, j, ext)
            write_image(os.path.join(root, fid),
                        rng.integers(0, 255, (20, 10, channels), dtype=np.uint8))
            rows.append('{:04d},{}\n'.format(pid, fid))
    csv_path = os.path.join(root, 'x.csv')
    with open(csv_path, 'w') as f:
        f.writelines(rows)
    exp = str(tmp_path / 'exp')
    assert train.main(base_args(exp, csv_path, root, 3, '--batch_p', '4')) == 0
    assert checkpoint_steps(exp) == [0, 3]


def test_image_root_and_experiment_root_checked_by_argparse(tmp_path, tiny_dataset, capsys):
    csv_path, image_root = tiny_dataset
    a_file = str(tmp_path / 'file')
    open(a_file, 'w').close()
    with pytest.raises(SystemExit) as info:
        train.main(base_args(str(tmp_path / 'exp'), csv_path, a_file, 2))
    assert info.value.code == 2 and 'is not an existing directory' in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        train.main(base_args(os.path.join(a_file, 'exp'), csv_path, image_root, 2))
    assert info.value.code == 2 and 'exists and is not a directory' in capsys.readouterr().err


def test_experiment_root_not_writable(tmp_path, tiny_dataset, monkeypatch):
    csv_path, image_root = tiny_dataset

    def no_permission(*args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(os, 'makedirs', no_permission)
    refuse(tmp_path, csv_path, image_root, 'cannot create the experiment root .*Permission')


def test_checkpoint_of_another_model(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    args_file = os.path.join(root, 'args.json')
    stored = open(args_file).read()
    for wrong in ('"embedding_dim": 8', '"head_name": "direct"'):
        key = wrong.split(':')[0]
        edited = '\n'.join(wrong + ',' if line.strip().startswith(key) else line
                           for line in stored.splitlines())
        with open(args_file, 'w') as f:
            f.write(edited)
        with pytest.raises(cli.UserError, match='does not fit the model'):
            train.main(['--experiment_root', root])
        with pytest.raises(cli.UserError, match='does not fit the model'):
            embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])


def test_disk_full_while_writing_embeddings(tmp_path, tiny_dataset, monkeypatch):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 1)) == 0

    def disk_full(self, name, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(h5py.File, 'create_dataset', disk_full, raising=False)
    monkeypatch.setattr(h5py.Group, 'create_dataset', disk_full)
    with pytest.raises(cli.UserError, match='cannot write the embeddings .*No space left'):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])
    assert not [f for f in os.listdir(root) if '.h5' in f]


def test_corrupt_image_in_embedding(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 1)) == 0
    fid = corrupt(image_root, csv_path, 'truncated')
    with pytest.raises(cli.UserError, match='cannot be decoded.*{}.*drop their rows'.format(
            fid)):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet'])
    assert not [f for f in os.listdir(root) if '.h5' in f]


def test_second_sigint_while_stopping(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    interrupt_at(3)
    interrupt_at(3)
    assert train.main(base_args(root, csv_path, image_root, 30)) == 0
    assert checkpoint_steps(root) == [0, 3]
    assert 'Received SIGINT again' in open(os.path.join(root, 'train.log')).read()


def test_keep_checkpoints(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 8, '--checkpoint_frequency', '2',
                                '--keep_checkpoints', '2')) == 0
    assert checkpoint_steps(root) == [6, 8]


def test_half_written_checkpoint_is_never_resumed_from(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    interrupt_at(2)
    assert train.main(base_args(root, csv_path, image_root, 6)) == 0
    # A process that died while writing checkpoint 3 leaves its files, but the
    # index file `checkpoint` still names checkpoint 2.
    for suffix in ('.index', '.data-00000-of-00001'):
        with open(os.path.join(root, 'checkpoint-3' + suffix), 'wb') as f:
            f.write(os.urandom(64))
    assert train.main(['--experiment_root', root]) == 0
    log = open(os.path.join(root, 'train.log')).read()
    assert 'Restoring from checkpoint: {}'.format(os.path.join(root, 'checkpoint-2')) in log
    assert checkpoint_steps(root) == [0, 2, 3, 6]


@pytest.mark.slow
@pytest.mark.parametrize('script', ['train.py', 'embed.py', 'evaluate.py', 'export.py'])
def test_every_script_reports_bad_input_alike(tmp_path, script):
    """The shared entry point: one `error:` line, exit status 1, no traceback."""
    missing = str(tmp_path / 'missing.csv')
    arguments = {
        'train.py': ['--experiment_root', str(tmp_path / 'exp'), '--train_set', missing,
                     '--image_root', str(tmp_path)],
        'embed.py': ['--experiment_root', str(tmp_path / 'none'), '--dataset', missing],
        'evaluate.py': ['--excluder', 'diagonal', '--metric', 'euclidean', '--query_dataset',
                        missing, '--query_embeddings', 'q.h5', '--gallery_dataset', missing,
                        '--gallery_embeddings', 'g.h5'],
        'export.py': ['--experiment_root', str(tmp_path / 'none')],
    }[script]
    done = subprocess.run([sys.executable, os.path.join(ROOT, script)] + arguments,
                          capture_output=True, text=True, cwd=str(tmp_path),
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert done.returncode == 1, done.stderr
    assert 'Traceback' not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith('error: '), done.stderr
    assert not os.path.exists(tmp_path / 'exp')


def png_declaring(path, width, height):
    """Writes a small PNG whose header declares `width`×`height` pixels."""
    import struct
    import zlib
    from PIL import Image
    Image.new('RGB', (4, 4)).save(path)
    data = bytearray(open(path, 'rb').read())
    # The IHDR chunk follows the 8-byte signature: length, type, then its data.
    data[16:24] = struct.pack('>II', width, height)
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
    open(path, 'wb').write(bytes(data))


def test_images_over_pils_own_bomb_limit_are_refused_by_their_header(tmp_path):
    from triplet_reid.inputs import images
    png_declaring(str(tmp_path / 'bomb.png'), 20000, 20000)
    # PIL refuses such a header before it tells the size; it must count as
    # too large, not as damaged (which TensorFlow would then decode).
    assert images.header_pixels(str(tmp_path / 'bomb.png')) > images.MAX_IMAGE_PIXELS
    assert images.find_oversized_images(['bomb.png'], str(tmp_path), 10 ** 12) == ['bomb.png']
