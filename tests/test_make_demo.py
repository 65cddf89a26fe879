"""data/make_demo.py, made small: a complete set, nothing of the user's removed, and
impossible counts refused."""

import os

import pytest

from data import make_demo


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
