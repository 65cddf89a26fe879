"""A gallery that grows and shrinks: search.py --append and --remove, through
gallery.append and gallery.remove."""

import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid.inputs import embeddings_file
from triplet_reid.serving import gallery
from triplet_reid import search
from conftest import ROOT
from triplet_reid.serving.gallery import rank

ORIGIN = {'experiment_root': '/exp', 'checkpoint': 'checkpoint-100'}
NAMES = ['original_center', 'original_flip_center']


def clustered(count, seed, dim=16, people=None):
    """(count, dim) embeddings of `people` identities (count // 10 by
    default) around random directions."""
    rng = np.random.default_rng(seed)
    people = people or max(count // 10, 1)
    centers = rng.normal(size=(people, dim)).astype(np.float32)
    return centers[rng.integers(0, people, count)] + rng.normal(0, 0.3, (count, dim)).astype(
        np.float32)


def write(path, embs, prefix, origin=ORIGIN, names=NAMES, aggregator='mean'):
    fids = ['{}/{:05d}.jpg'.format(prefix, i) for i in range(len(embs))]
    augmented = np.stack([embs, embs + 0.01]) if len(names) > 1 else None
    embeddings_file.write(str(path), embs, augmented, names, fids, aggregator, origin)
    return fids


def test_appended_rows_join_the_gallery_and_its_index_without_a_rebuild(tmp_path, monkeypatch):
    old, new = clustered(2000, 0), clustered(300, 1)
    path, extra = tmp_path / 'g.h5', tmp_path / 'new.h5'
    old_fids, new_fids = write(path, old, 'cam1'), write(extra, new, 'cam2')
    gallery.load_or_build_index(old, 'euclidean', str(path))
    built = []
    monkeypatch.setattr(gallery, 'build_index', lambda *a: built.append(1))
    assert gallery.append(str(path), str(extra)) == (300, 2300, [
        gallery.index_path(str(path), 'euclidean')])
    embs, fids, augmentation, origin, _ = gallery.load_gallery(str(path))
    np.testing.assert_array_equal(embs, np.concatenate([old, new]))
    assert list(fids) == old_fids + new_fids and origin == ORIGIN
    assert augmentation == (True, 'center', 'mean')
    assert embeddings_file.read_augmented(str(path)).shape == (2, 2300, 16)
    # The saved index now belongs to the grown gallery: reused, not rebuilt,
    # and it finds the exact top-10 of queries near the new rows.
    index = gallery.load_or_build_index(embs, 'euclidean', str(path))
    assert not built and index.ntotal == 2300
    queries = new[:20] + 0.05
    nearest, _ = gallery.search_index(index, queries, embs, 'euclidean', 10, 64)
    exact, _, _ = rank(queries, embs, 'euclidean', 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(nearest, exact)]) >= 9.5
    assert sorted(os.listdir(tmp_path)) == ['.g.h5.lock', 'g.h5', 'g.h5.l2.index', 'new.h5']


@pytest.mark.parametrize('change, message', [
    ({'origin': {'experiment_root': '/other', 'checkpoint': 'checkpoint-100'}},
     'come from different experiments'),
    ({'origin': {'experiment_root': '/exp', 'checkpoint': 'checkpoint-200'}},
     'come from different checkpoints'),
    ({'origin': {}}, 'only one names its network'),
    ({'dim': 8}, '8-dimensional embeddings and the gallery .* 16'),
    ({'names': ['original_resize'], 'aggregator': None}, 'other test-time augmentations'),
    ({'prefix': 'cam1'}, 'holds 40 image.* that the gallery .* holds already'),
])
def test_embeddings_that_do_not_fit_the_gallery_are_refused_and_change_nothing(
        tmp_path, change, message):
    path, extra = tmp_path / 'g.h5', tmp_path / 'new.h5'
    write(path, clustered(100, 0), 'cam1')
    before = path.read_bytes()
    kwargs = {key: change[key] for key in ('origin', 'names', 'aggregator') if key in change}
    write(extra, clustered(40, 1, change.get('dim', 16)), change.get('prefix', 'cam2'),
          **kwargs)
    with pytest.raises(cli.UserError, match=message):
        gallery.append(str(path), str(extra))
    assert path.read_bytes() == before


def test_two_appenders_at_once_lose_no_row(tmp_path):
    path = tmp_path / 'g.h5'
    write(path, clustered(100, 0), 'cam0')
    parts = []
    for number in range(1, 5):
        parts.append(str(tmp_path / 'new{}.h5'.format(number)))
        write(parts[-1], clustered(50, number), 'cam{}'.format(number))
    processes = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'search.py'), '--gallery',
                                   str(path), '--append', part], stderr=subprocess.PIPE,
                                  text=True) for part in parts]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
        process.stderr.close()
    fids = embeddings_file.read(str(path)).fids
    assert len(fids) == 300 and len(set(fids)) == 300
    assert {fid.split('/')[0] for fid in fids} == {'cam{}'.format(n) for n in range(5)}


def test_a_kill_during_an_append_leaves_the_old_gallery_and_no_temporary(tmp_path):
    path, extra = tmp_path / 'g.h5', tmp_path / 'new.h5'
    write(path, clustered(100, 0), 'cam1')
    write(extra, clustered(40, 1), 'cam2')
    before = path.read_bytes()
    # Killed once the new gallery is written beside the old one, before the rename.
    code = ('import os, sys; sys.path.insert(0, {!r}); import checkout; checkout.register()\n'
            'from triplet_reid.storage import files\n'
            'from triplet_reid.serving import gallery\n'
            'files.put_file = lambda *a: os.kill(os.getpid(), 9)\n'
            'gallery.append({!r}, {!r})\n').format(ROOT, str(path), str(extra))
    assert subprocess.run([sys.executable, '-c', code]).returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert gallery.append(str(path), str(extra))[:2] == (40, 140)
    assert sorted(os.listdir(tmp_path)) == ['.g.h5.lock', 'g.h5', 'new.h5']


def test_removed_rows_leave_the_gallery_and_its_index_is_rebuilt(tmp_path, capsys):
    path = tmp_path / 'g.h5'
    embs = clustered(300, 0)
    fids = write(path, embs[:200], 'cam1') + write(tmp_path / 'b.h5', embs[200:], 'cam2')
    gallery.append(str(path), str(tmp_path / 'b.h5'))
    gallery.load_or_build_index(embs, 'cosine', str(path))
    assert gallery.remove(str(path), '^cam1/') == (200, 100)
    left, left_fids, _, _, _ = gallery.load_gallery(str(path))
    np.testing.assert_array_equal(left, embs[200:])
    assert list(left_fids) == fids[200:]
    assert embeddings_file.read_augmented(str(path)).shape == (2, 100, 16)
    assert not os.path.exists(gallery.index_path(str(path), 'cosine'))
    assert gallery.remove(str(path), 'nothing matches this') == (0, 100)
    before = path.read_bytes()
    for pattern, message in (('cam', 'matches all 100 images'),
                             ('(', 'not a regular expression')):
        with pytest.raises(cli.UserError, match=message):
            gallery.remove(str(path), pattern)
    assert path.read_bytes() == before


def test_remove_deletes_only_the_indexes_it_saved(tmp_path):
    # A folder, a link or a foreign file where an index would be is refused
    # by name, and the gallery is left as it was; the file the user kept
    # there too.
    path = tmp_path / 'g.h5'
    write(path, clustered(100, 0), 'cam1')
    write(tmp_path / 'b.h5', clustered(20, 1), 'cam2')
    gallery.append(str(path), str(tmp_path / 'b.h5'))
    index = gallery.index_path(str(path), 'euclidean')
    kept = tmp_path / 'notes.txt'
    kept.write_text('mine')
    before = path.read_bytes()
    for make in (lambda: os.makedirs(os.path.join(index, 'sub')) or
                 open(os.path.join(index, 'sub', 'file'), 'w').close(),
                 lambda: os.symlink(str(kept), index),
                 lambda: open(index, 'w').write('not an index'),
                 lambda: embeddings_file.write(index, clustered(3, 2), None, NAMES[:1],
                                               ['a', 'b', 'c'], 'mean', ORIGIN)):
        make()
        with pytest.raises(cli.UserError, match=r'`{}` stands where --remove would delete the '
                                                r'gallery\'s saved index, but it is not an '
                                                r'index file'.format(re.escape(index))):
            gallery.remove(str(path), '^cam2/')
        assert path.read_bytes() == before and kept.read_text() == 'mine'
        assert os.path.lexists(index)
        if os.path.isdir(index) and not os.path.islink(index):
            assert os.path.exists(os.path.join(index, 'sub', 'file'))
            shutil.rmtree(index)
        else:
            os.remove(index)
    # A search never saves its index through a link it finds there (outputs
    # the user names are written through links; this path the user never named).
    os.symlink(str(kept), index)
    gallery.load_or_build_index(gallery.load_gallery(str(path))[0], 'euclidean', str(path))
    assert kept.read_text() == 'mine' and os.path.islink(index)
    os.remove(index)
    # The index that a search saved is removed.
    gallery.load_or_build_index(gallery.load_gallery(str(path))[0], 'euclidean', str(path))
    assert gallery.remove(str(path), '^cam2/') == (20, 100)
    assert not os.path.lexists(index)


def test_datasets_claiming_more_than_their_file_holds_are_refused_before_reading(tmp_path):
    # A dataset of fill values never written, and one of compressed zeros,
    # each claiming 5 GB in a file of kilobytes; a gallery index alike is
    # built anew instead.
    import h5py
    path = tmp_path / 'g.h5'
    write(path, clustered(100, 0), 'cam1')
    for name, options in (('fill.h5', {}), ('zeros.h5', {'compression': 'gzip'})):
        bomb = str(tmp_path / name)
        with h5py.File(bomb, 'w') as f:
            f.create_dataset('emb', shape=(10 ** 7, 128), dtype='f4', chunks=(10 ** 4, 128),
                             **options)
            if options:
                f['emb'][:10 ** 4] = np.zeros((10 ** 4, 128), np.float32)
            f.create_dataset('fids', data=np.array(['a.jpg'], dtype=object),
                             dtype=h5py.string_dtype())
        assert os.path.getsize(bomb) < 1 << 20
        with pytest.raises(cli.UserError, match=r'the `emb` dataset of `.*{}` claims 1280000000 '
                                                r'values of 4 bytes, 4.77 GiB'.format(name)):
            embeddings_file.read(bomb)
        with pytest.raises(cli.UserError, match='claims'):
            search.main(['--gallery', str(path), '--query_embeddings', bomb])
    index = gallery.index_path(str(path), 'euclidean')
    with h5py.File(index, 'w') as f:
        f.create_dataset('faiss', shape=(10 ** 10,), dtype='u1', chunks=(10 ** 6,))
        f.attrs['gallery_sha256'] = gallery.embeddings_digest(gallery.load_gallery(str(path))[0])
    assert gallery._read_index(index, gallery.embeddings_digest(
        gallery.load_gallery(str(path))[0])) is None


def test_embeddings_that_are_no_regular_file_are_refused_before_opening(tmp_path):
    # HDF5 waits forever on a pipe.
    fifo = str(tmp_path / 'fifo.h5')
    os.mkfifo(fifo)
    for read in (embeddings_file.read, embeddings_file.read_augmented):
        with pytest.raises(cli.UserError, match=r'`{}` is not a regular file'.format(fifo)):
            read(fifo)
    with pytest.raises(cli.UserError, match=r'the gallery `{}` is not a regular file'.format(
            fifo)):
        search.main(['--gallery', fifo, '--query_embeddings', fifo])


def test_an_empty_query_set_is_refused(tmp_path):
    path, empty = tmp_path / 'g.h5', tmp_path / 'q.h5'
    write(path, clustered(100, 0), 'cam1')
    write(empty, np.zeros((0, 16), np.float32), 'cam2', names=NAMES[:1])
    for extra in ([], ['--output', str(tmp_path / 'x.csv')]):
        with pytest.raises(cli.UserError, match=r'--query_embeddings `.*q\.h5` holds no '
                                                r'embeddings'):
            search.main(['--gallery', str(path), '--query_embeddings', str(empty)] + extra)
    assert sorted(os.listdir(tmp_path)) == ['g.h5', 'q.h5']


def test_the_command_line_appends_and_removes_and_refuses_mixed_flags(tmp_path, capsys):
    path, extra = tmp_path / 'g.h5', tmp_path / 'new.h5'
    write(path, clustered(100, 0), 'cam1')
    write(extra, clustered(40, 1), 'cam2')
    # The earlier spellings without a mode, and the modes.
    assert search.main(['--gallery', str(path), '--append', str(extra)]) == 0
    assert 'Appended 40 images to' in capsys.readouterr().err
    assert search.main(['--gallery', str(path), '--remove', '^cam2/']) == 0
    assert 'Removed 40 images from' in capsys.readouterr().err
    assert search.main(['append', '--gallery', str(path), '--embeddings', str(extra)]) == 0
    assert 'Appended 40 images to' in capsys.readouterr().err
    assert search.main(['remove', '--gallery', str(path), '--pattern', '^cam2/']) == 0
    assert 'Removed 40 images from' in capsys.readouterr().err
    # argparse keeps the modes apart.
    for argv, message in (
            (['--append', str(extra), '--query', 'x.jpg'], 'unrecognized arguments: --query'),
            (['--append', str(extra), '--remove', 'x'], 'unrecognized arguments: --remove x'),
            (['--experiment_root', 'exp'], 'one of the arguments --query --query_embeddings is '
                                           'required'),
            (['--query', 'x.jpg'], '--query needs the --experiment_root'),
            (['--query', 'x.jpg', '--query_embeddings', 'q.h5'], 'not allowed with argument'),
            (['--append', str(path)], 'is the same file as --append'),
            (['--remove', 'x', '--gallery', str(tmp_path / 'missing.h5')],
             'missing.h5` is not a file')):
        with pytest.raises((SystemExit, cli.UserError)) as raised:
            search.main(['--gallery', str(path)] + argv)
        assert raised.type is cli.UserError or raised.value.code == 2
        text = str(raised.value) if raised.type is cli.UserError else capsys.readouterr().err
        assert re.search(message, text), text
    assert len(embeddings_file.read(str(path)).fids) == 100
    assert not (tmp_path / '.missing.h5.lock').exists()
    # Stored queries of another checkpoint are refused; of this one, searched.
    other = tmp_path / 'other.h5'
    write(other, clustered(5, 2), 'q', origin={'experiment_root': '/exp',
                                              'checkpoint': 'checkpoint-5'})
    with pytest.raises(cli.UserError, match='come from different checkpoints'):
        search.main(['--gallery', str(path), '--query_embeddings', str(other)])
    write(other, embeddings_file.read(str(path)).emb[:3], 'q')
    assert search.main(['--gallery', str(path), '--query_embeddings', str(other),
                        '--top_k', '1']) == 0
    assert re.findall(r'(q/\d+\.jpg) \(euclidean distance\):\n +1 +0\.00\d+ +(\S+)',
                      capsys.readouterr().out) == [
        ('q/{:05d}.jpg'.format(i), 'cam1/{:05d}.jpg'.format(i)) for i in range(3)]


def test_a_gallery_behind_a_link_is_changed_where_the_link_points(tmp_path):
    real, extra = tmp_path / 'store' / 'g.h5', tmp_path / 'new.h5'
    real.parent.mkdir()
    write(real, clustered(100, 0), 'cam1')
    write(extra, clustered(40, 1), 'cam2')
    link = tmp_path / 'link.h5'
    link.symlink_to(real)
    assert search.main(['append', '--gallery', str(link), '--embeddings', str(extra)]) == 0
    assert link.is_symlink() and len(embeddings_file.read(str(real)).fids) == 140
    assert gallery.remove(str(link), '^cam2/') == (40, 100)
    assert link.is_symlink() and len(embeddings_file.read(str(real)).fids) == 100
    # The lock is the target's, which a change naming the target takes too.
    assert sorted(os.listdir(real.parent)) == ['.g.h5.lock', 'g.h5']
    # A search through the link keeps its index beside the gallery, where appends update it.
    gallery.load_or_build_index(embeddings_file.read(str(real)).emb, 'euclidean', str(link))
    assert os.path.isfile(gallery.index_path(str(real), 'euclidean'))
    assert gallery.append(str(link), str(extra))[2] == [gallery.index_path(str(real),
                                                                         'euclidean')]


def test_a_backtracking_pattern_is_matched_in_linear_time_outside_the_lock(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / 'g.h5'
    embs = clustered(200, 0)
    write(path, embs, 'a' * 40)
    holding = []
    real_locked = gallery.locked

    def watched(name):
        holding.append(True)
        return real_locked(name)
    monkeypatch.setattr(gallery, 'locked', watched)
    searched = []

    class Pattern:
        def __init__(self, compiled):
            self.compiled = compiled

        def search(self, name):
            searched.append(bool(holding))
            return self.compiled.search(name)
    compile_pattern = gallery.patterns.compile
    monkeypatch.setattr(gallery.patterns, 'compile', lambda *a: Pattern(compile_pattern(*a)))
    # Python's re takes minutes on each of these names; RE2 answers at once.
    assert gallery.remove(str(path), '^(.+)+X$') == (0, 200)
    assert len(searched) == 200 and not any(searched)
    monkeypatch.undo()
    for pattern, message in ((r'(a)\1', 'invalid escape sequence'),
                             ('(?=a)', 'invalid perl operator'), ('x' * 1001, '1001 characters'),
                             ('a\udcffb', r'`a\\udcffb` holds bytes that are not UTF-8')):
        with pytest.raises(cli.UserError, match=message):
            gallery.remove(str(path), pattern)
    # Names that were not UTF-8 on disk reach Python with surrogates, matched as their escapes.
    from triplet_reid.cli import patterns
    assert patterns.compile(r'_c(\d+)', '--camera_regex').search('\udcff_c12.jpg').group(1) == '12'
    # The same engine checks --camera_regex, in train.py's parser and in the excluders.
    from triplet_reid import train
    with pytest.raises(SystemExit):
        train.main(['--experiment_root', str(tmp_path / 'x'), '--camera_regex', r'(a)\1'])
    from triplet_reid import excluders
    with pytest.raises(cli.UserError, match='--camera_regex `.*` is not a regular expression'):
        excluders.load('folders', ['a/1.jpg'], ['a/2.jpg'], r'^(.+)+(?=X)')
