"""The character-retrieval set of data/make_glyphs.py, made small in a temporary folder."""

import os

import pandas as pd
import pytest
from PIL import Image

from triplet_reid import cli
from triplet_reid.data import make_glyphs


@pytest.fixture(scope='module')
def glyphs(tmp_path_factory):
    output = tmp_path_factory.mktemp('set') / 'glyphs'
    assert make_glyphs.main(['--output', str(output), '--per_letter', '3']) == 0
    return output


def read(glyphs, split):
    return pd.read_csv(glyphs / 'glyphs_{}.csv'.format(split), header=None, names=['pid', 'fid'],
                       dtype=str)


def test_splits_hold_disjoint_alphabets_with_every_image(glyphs):
    train, test = read(glyphs, 'train'), read(glyphs, 'test')
    assert not set(train.pid) & set(test.pid)
    for frame in (train, test):
        assert (frame.groupby('pid').size() == 3).all()
        assert len(frame.pid.unique()) > 100
        for fid in frame.fid[::50]:
            image = Image.open(glyphs / fid)
            assert image.size == (105, 105) and image.mode == 'L'
    # Greek letters are tested, Latin ones trained on.
    assert 'u0391' in set(test.pid) and 'u0041' in set(train.pid)


def test_lookalike_letters_are_one_identity(glyphs):
    train = set(read(glyphs, 'train').pid)
    # Cyrillic А and О are drawn as Latin A and O.
    assert 'u0410' not in train and 'u041E' not in train


def test_existing_output_is_kept_without_force_and_force_replaces_only_its_own(glyphs,
                                                                               tmp_path):
    before = sorted(os.listdir(glyphs))
    with pytest.raises(cli.UserError, match='exists already; use --force'):
        make_glyphs.main(['--output', str(glyphs), '--per_letter', '2'])
    assert sorted(os.listdir(glyphs)) == before and len(read(glyphs, 'train')) % 3 == 0
    experiment = tmp_path / 'exp'
    experiment.mkdir()
    (experiment / 'args.json').write_text('{}')
    with pytest.raises(cli.UserError, match=r'holds files that make_glyphs.py did not write '
                       r'\(args.json\)'):
        make_glyphs.main(['--output', str(experiment), '--force'])
    assert os.listdir(experiment) == ['args.json']


def test_unwritable_output_is_one_message_and_missing_folders_are_made(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(cli.UserError, match='does not exist or is not writeable'):
        make_glyphs.main(['--output', str(blocker / 'glyphs')])
    assert sorted(os.listdir(tmp_path)) == ['a_file']
    assert make_glyphs.main(['--output', str(tmp_path / 'new' / 'glyphs'), '--per_letter',
                             '2']) == 0
    assert sorted(os.listdir(tmp_path / 'new')) == ['glyphs']


def test_negative_seed_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_glyphs.main(['--output', str(tmp_path / 'glyphs'), '--seed', '-1'])
    assert exit_info.value.code == 2
    assert 'argument --seed: found -1' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_per_letter_counts_that_would_fill_the_disk_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        make_glyphs.main(['--output', str(tmp_path / 'glyphs'), '--per_letter', '100000000'])
    assert not os.path.exists(tmp_path / 'glyphs')
