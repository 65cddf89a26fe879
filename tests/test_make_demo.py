"""data/make_demo.py, made small: a complete set, nothing of the user's removed, and
impossible counts refused."""

import os

import pytest

from triplet_reid import cli
from triplet_reid.storage import files
from triplet_reid.data import make_demo


def test_small_demo_is_complete_and_spares_a_foreign_partial_folder(tmp_path):
    foreign = tmp_path / 'demo.partial'
    foreign.mkdir()
    (foreign / 'mine.txt').write_text('keep')
    output = tmp_path / 'demo'
    argv = ['--output', str(output), '--train_ids', '3', '--test_ids', '3', '--distractors',
            '2', '--junk', '2', '--val_ids', '2']
    assert make_demo.main(argv) == 0
    assert (foreign / 'mine.txt').read_text() == 'keep'
    assert sorted(os.listdir(tmp_path)) == ['demo', 'demo.partial']
    rows = (output / 'demo_train.csv').read_text().splitlines()
    assert len({row.split(',')[0] for row in rows}) == 3
    for row in rows:
        assert (output / row.split(',')[1]).is_file()
    # --force replaces the set through a fresh temporary folder as well.
    assert make_demo.main(argv + ['--force', '--seed', '1']) == 0
    assert sorted(os.listdir(tmp_path)) == ['demo', 'demo.partial']


def test_force_replaces_only_a_folder_of_its_own(tmp_path):
    small = ['--train_ids', '2', '--test_ids', '2', '--distractors', '0', '--junk', '0',
             '--val_ids', '0']
    # An experiment root, a folder of other files, one holding a foreign demo-like folder.
    for name, names in (('exp', ('args.json', 'checkpoint-10.index')), ('photos', ('a.jpg',)),
                        ('mixed', ('demo_train.csv', 'notes.txt'))):
        folder = tmp_path / name
        folder.mkdir()
        for file in names:
            (folder / file).write_text('keep')
        with pytest.raises(cli.UserError, match='holds files that make_demo.py did not '
                           'write .*Nothing was written'):
            make_demo.main(['--output', str(folder), '--force'] + small)
        with pytest.raises(cli.UserError, match='exists already; use --force'):
            make_demo.main(['--output', str(folder)] + small)
        assert sorted(os.listdir(folder)) == sorted(names), name
        assert all((folder / file).read_text() == 'keep' for file in names)
    # Its own folder, and one of an older version without the mark (only its own names).
    own = tmp_path / 'demo'
    assert make_demo.main(['--output', str(own)] + small) == 0
    assert (own / files.FOLDER_MARK).read_text() == 'make_demo.py\n'
    (own / files.FOLDER_MARK).unlink()
    assert make_demo.main(['--output', str(own), '--force'] + small) == 0
    assert (own / files.FOLDER_MARK).is_file()
    # A mark of another tool, or a damaged one, is named.
    (own / files.FOLDER_MARK).write_text('make_glyphs.py\n')
    with pytest.raises(cli.UserError, match=r'did not write \(.written-by naming '
                       r'make_glyphs.py\)'):
        make_demo.main(['--output', str(own), '--force'] + small)
    (own / files.FOLDER_MARK).write_bytes(b'\xff\xfe')
    with pytest.raises(cli.UserError, match=r'\(.written-by that cannot be read\)'):
        make_demo.main(['--output', str(own), '--force'] + small)
    # An empty folder is written without --force.
    (tmp_path / 'empty').mkdir()
    assert make_demo.main(['--output', str(tmp_path / 'empty')] + small) == 0


@pytest.mark.parametrize('flag, value', [('--train_ids', '-3'), ('--test_ids', '0'),
                                         ('--junk', '-1'), ('--val_ids', '-2'),
                                         ('--seed', '-1')])
def test_impossible_count_is_refused_before_anything_is_written(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        make_demo.main(['--output', str(tmp_path / 'demo'), flag, value])
    assert exit_info.value.code == 2
    assert 'argument {}: found {}'.format(flag, value) in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('flag', ['--train_ids', '--test_ids', '--distractors', '--junk',
                                  '--val_ids'])
def test_counts_that_would_fill_the_disk_are_refused(tmp_path, flag):
    with pytest.raises(SystemExit):
        make_demo.main(['--output', str(tmp_path / 'demo'), flag, '100000000'])
    assert not os.path.exists(tmp_path / 'demo')
