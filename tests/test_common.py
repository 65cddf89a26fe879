"""CSV loading and the argument types."""

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.cli import flags, startup
from triplet_reid.storage import files, json_files
from conftest import ROOT, write_file


# CSV loading.

def test_load_dataset_keeps_identity_strings(tiny_dataset):
    csv_path, root = tiny_dataset
    pids, fids = common.load_dataset(csv_path, root)
    assert len(pids) == len(fids) == 40
    assert pids[0] == '0001' and fids[0].startswith('train/0001_')


def test_missing_files_fail_or_are_dropped(tiny_dataset):
    csv_path, root = tiny_dataset
    with open(csv_path, 'a') as f:
        f.write('0099,train/nope_1.jpg\n0099,train/nope_2.jpg\n')
    with pytest.raises(cli.UserError, match=r'2 of the 42 images.*nope_1'):
        common.load_dataset(csv_path, root)
    pids, fids = common.load_dataset(csv_path, root, fail_on_missing=False)
    assert len(fids) == 40 and '0099' not in pids


def test_image_root_not_a_folder(tiny_dataset):
    csv_path, _ = tiny_dataset
    with pytest.raises(cli.UserError, match='not a folder'):
        common.load_dataset(csv_path, csv_path)


@pytest.mark.parametrize('content, message', [
    ('', 'is empty'),
    ('\n\n', 'is empty'),
    ('pid,path\n0001,a.jpg\n', r'line 1: `pid,path` looks like a header'),
    ('0001,a.jpg\n0002,b.jpg,extra\n', r'line 2: expected 2 columns.*found 3'),
    ('0001,a.jpg\n0002\n', r'line 2: expected 2 columns.*found 1'),
    ('0001,a.jpg\n,b.jpg\n', r'line 2: the identity and the path must both be non-empty'),
    ('0001,a.jpg,x\n0002,b.jpg\n', r'line 1: expected 2 columns.*found 3: `0001,a.jpg,x`'),
    ('0001,a.jpg\n\n0002,b.jpg,x\n', r'line 3: expected 2 columns.*found 3'),
    ('0001,a.jpg\n0002,"b.jpg\n0003,c.jpg\n', r'not a readable CSV file'),
])
def test_malformed_csv(tmp_path, content, message):
    path = write_file(tmp_path / 'x.csv', content)
    with pytest.raises(cli.UserError, match=message) as info:
        common.load_dataset(path, None)
    assert 'x.csv' in str(info.value)


def test_csv_values_stay_strings(tmp_path):
    # pandas would read `0002` as 2 and `NA` or `null` as missing without dtype=str and
    # keep_default_na=False; blank lines are skipped and white space around values goes.
    path = write_file(tmp_path / 'x.csv', '0002,a.jpg\n\nNA,"b,1.jpg"\n null , c.jpg \n')
    pids, fids = common.load_dataset(path, None)
    assert pids.tolist() == ['0002', 'NA', 'null']
    assert fids.tolist() == ['a.jpg', 'b,1.jpg', 'c.jpg']


def test_non_utf8_csv(tmp_path):
    path = write_file(tmp_path / 'x.csv', b'0001,a.jpg\n0002,b\xff.jpg\n', 'wb')
    with pytest.raises(cli.UserError, match='line 2: the file is not valid UTF-8'):
        common.load_dataset(path, None)


def test_missing_csv(tmp_path):
    with pytest.raises(cli.UserError, match='cannot read the dataset CSV'):
        common.load_dataset(str(tmp_path / 'none.csv'), None)


def test_a_csv_that_is_no_regular_file_is_refused_before_reading(tmp_path):
    # /dev/zero read whole fills the memory; a pipe may never end.
    fifo = str(tmp_path / 'fifo.csv')
    os.mkfifo(fifo)
    for path in ('/dev/zero', fifo, str(tmp_path)):
        with pytest.raises(cli.UserError, match=r'the dataset CSV `{}` is not a regular '
                                                r'file'.format(path)):
            common.load_dataset(path, None)


# Argument types.

def test_argument_types(tmp_path):
    assert flags.positive_int('3') == 3
    for bad in ('0', '-1', 'x'):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.positive_int(bad)
    assert flags.nonnegative_int('0') == 0
    assert flags.margin('0.2') == 0.2 and flags.margin('soft') == 'soft'
    assert flags.margin('None') == 'none'
    with pytest.raises(argparse.ArgumentTypeError):
        flags.margin('hard')
    # Non-finite numbers are refused by every number type.
    for checker in (flags.float_between(0, 10, include_lower=False), flags.float_between(0, 10),
                    flags.unit_float, flags.margin):
        for bad in ('inf', 'nan', '-inf', '1e999'):
            with pytest.raises(argparse.ArgumentTypeError):
                checker(bad)
    assert flags.float_between(0, 1)('0') == 0.0
    assert flags.float_between(0, 1, include_lower=False)('3e-4') == 3e-4
    for bad in ('0', '1.5', '-1'):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.float_between(0, 1, include_lower=False)(bad)
    assert flags.writeable_directory(str(tmp_path / 'new' / 'dir'))
    with pytest.raises(argparse.ArgumentTypeError):
        flags.readable_directory(str(tmp_path / 'missing'))
    file_path = write_file(tmp_path / 'f', 'x')
    with pytest.raises(argparse.ArgumentTypeError):
        flags.writeable_directory(file_path)



def test_one_or_more_flags_store_one_value_as_itself():
    parser = argparse.ArgumentParser()
    parser.add_argument('--x', action=flags.OneOrMore, type=int)
    assert parser.parse_args(['--x', '1']).x == 1
    assert parser.parse_args(['--x', '1', '2']).x == [1, 2]
    assert parser.parse_args(['--x', '1', '--x', '2', '3']).x == [1, 2, 3]
    assert parser.parse_args([]).x is None
    assert flags.given_arguments(parser, ['--x', '1', '--x', '2']) == {'x'}
    # Stored as a single value or as a list, both are valid in args.json.
    for stored in (1, [1, 2]):
        flags.check_stored_arguments(parser, {'x': stored}, 'args.json')
    with pytest.raises(cli.UserError, match='`x` = `.1, .a..`, which is not a valid'):
        flags.check_stored_arguments(parser, {'x': [1, 'a']}, 'args.json')


def test_training_sets_are_merged_with_their_identities_kept_apart(tmp_path):
    assert common.training_sets('a.csv', 'r') == [('a.csv', 'r')]
    assert common.training_sets(['a.csv', 'b.csv'], 'r') == [('a.csv', 'r'), ('b.csv', 'r')]
    assert common.training_sets(['a.csv', 'b.csv'], ['r', 's']) == [('a.csv', 'r'),
                                                                    ('b.csv', 's')]
    with pytest.raises(cli.UserError, match=r'--train_set names 3 CSV file\(s\) and '
                       r'--image_root 2 folders'):
        common.training_sets(['a', 'b', 'c'], ['r', 's'])

    one = (np.array(['0002', '0002']), np.array(['x/1.jpg', 'x/2.jpg']), 'data/m', 'm.csv')
    pids, fids, root = common.merge_datasets([one])
    assert root == 'data/m' and list(pids) == ['0002', '0002'] and list(fids) == list(one[1])

    other = (np.array(['0002']), np.array(['y/1.jpg']), 'data/d', 'd.csv')
    pids, fids, root = common.merge_datasets([one, other])
    assert root == os.path.abspath('data')
    assert list(pids) == ['1:0002', '1:0002', '2:0002']
    assert list(fids) == ['m/x/1.jpg', 'm/x/2.jpg', 'd/y/1.jpg']
    # Two sets under one image root keep their paths.
    shared = (np.array(['7']), np.array(['z/1.jpg']), 'data/m', 'z.csv')
    assert list(common.merge_datasets([one, shared])[1]) == ['x/1.jpg', 'x/2.jpg', 'z/1.jpg']
    with pytest.raises(cli.UserError, match=r'`.*data/m/x/1.jpg` is listed in training set '
                       r'1 \(`m.csv`\) and in set 2 \(`m.csv`\)'):
        common.merge_datasets([one, one])

@pytest.mark.parametrize('content', ['{"a": 1', '[1, 2]', b'{"a": "\xff"}'])
def test_read_json_refuses_damaged_files(tmp_path, content):
    path = write_file(tmp_path / 'x.json', content, 'wb' if isinstance(content, bytes) else 'w')
    with pytest.raises(cli.UserError, match=r'x\.json` is corrupt \(.*\); start over\.'):
        json_files.read_json(path, 'start over')
    assert json_files.read_json(write_file(tmp_path / 'y.json', '{"a": [1]}'), 'x') == {'a': [1]}


def test_given_arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument('--a', default=1, type=int)
    parser.add_argument('--b', default=2, type=int)
    parser.add_argument('--flag', action='store_true')
    assert flags.given_arguments(parser, ['--b', '2', '--flag']) == {'b', 'flag'}
    assert parser.parse_args([]).a == 1, 'defaults are restored'




def test_tensorflow_starts_quietly_and_keeps_other_lines():
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    code = ('import sys; sys.path.insert(0, {!r}); import checkout; checkout.register(); '
            'from triplet_reid.cli import startup; '
            'startup.quiet_tensorflow(); import tensorflow as tf; '
            'print(float(tf.reduce_sum(tf.ones(3))))').format(ROOT)
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == '3.0'
    assert 'I0000' not in done.stderr and 'cuInit' not in done.stderr, done.stderr
    assert 'absl::InitializeLog' not in done.stderr
    noise = ['I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on.',
             'WARNING: All log messages before absl::InitializeLog() is called are written to',
             'E0000 00:00:1.2 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error',
             'To enable the following instructions: AVX2 FMA, in other operations, rebuild']
    kept = ['E0000 00:00:1.2 1 bfc_allocator.cc:1] Allocator ran out of memory',
            'W0000 00:00:1.2 1 op_level_cost_estimator.cc:1] a warning', 'Traceback (most recent']
    assert all(startup.STARTUP_NOISE.match(line) for line in noise)
    assert not any(startup.STARTUP_NOISE.match(line) for line in kept)


# Folders written beside and renamed into place (the data scripts).

def fill(folder, text):
    with open(os.path.join(folder, 'f.txt'), 'w') as f:
        f.write(text)
    return text


def test_write_folder_replaces_the_old_folder_and_leaves_no_temporaries(tmp_path):
    output = str(tmp_path / 'out')
    assert files.write_folder(output, lambda folder: fill(folder, 'one')) == 'one'
    assert files.write_folder(output, lambda folder: fill(folder, 'two')) == 'two'
    assert os.listdir(tmp_path) == ['out'] and os.listdir(output) == ['f.txt']
    assert open(os.path.join(output, 'f.txt')).read() == 'two'

    def failing(folder):
        fill(folder, 'three')
        raise RuntimeError('interrupted')
    with pytest.raises(RuntimeError):
        files.write_folder(output, failing)
    assert os.listdir(tmp_path) == ['out']
    assert open(os.path.join(output, 'f.txt')).read() == 'two'


def test_write_folder_keeps_a_concurrent_writers_complete_folder(tmp_path, monkeypatch):
    output = str(tmp_path / 'out')
    files.write_folder(output, lambda folder: fill(folder, 'old'))
    replace = os.replace

    def other_writer_finishes_in_between(source, target):
        replace(source, target)
        if source == output:
            # Another process puts its complete folder in place right after
            # this one moved the old folder aside.
            os.mkdir(output)
            fill(output, 'theirs')
    monkeypatch.setattr(files.os, 'replace', other_writer_finishes_in_between)
    with pytest.raises(cli.UserError, match='another process wrote it at the same time'):
        files.write_folder(output, lambda folder: fill(folder, 'mine'))
    assert os.listdir(tmp_path) == ['out']
    assert open(os.path.join(output, 'f.txt')).read() == 'theirs'


def test_integers_are_bounded_where_they_are_typed(tmp_path, monkeypatch):
    assert flags.positive_int(str(2 ** 63 - 1)) == 2 ** 63 - 1
    for checker in (flags.positive_int, flags.nonnegative_int):
        with pytest.raises(argparse.ArgumentTypeError, match='at most 2\\*\\*63 - 1'):
            checker('1' + '0' * 40)
    assert flags.seed(str(2 ** 32 - 1)) == 2 ** 32 - 1
    for bad in (str(2 ** 32), '-1'):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.seed(bad)
    assert flags.int_between(0, 5)('0') == 0 and flags.int_between(2, 5)('5') == 5
    for bad in ('1', '6', '1e8', 'x'):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.int_between(2, 5)(bad)
    # A folder output that holds the current folder cannot be replaced.
    monkeypatch.chdir(tmp_path)
    for output in ('.', str(tmp_path.parent)):
        with pytest.raises(cli.UserError, match='holds the current folder'):
            files.check_writable(output, '--output', folder=True)
    files.check_writable('new', '--output', folder=True)


def raises(error):
    def main():
        raise error
    return main


def test_errors_of_the_machine_and_ctrl_c_are_one_line(capsys, monkeypatch):
    import errno
    import tensorflow as tf
    cases = [
        (KeyboardInterrupt(), 130, 'error: interrupted; outputs are written whole'),
        (OSError(errno.ENOSPC, 'No space left on device', '/data/out.h5'), 1,
         'error: cannot write `/data/out.h5`: the disk is full. Free some space'),
        (PermissionError(errno.EACCES, 'Permission denied', '/ro/x'), 1,
         'error: cannot write `/ro/x`: permission denied.'),
        (tf.errors.ResourceExhaustedError(None, None, '{{function_node x}} /e/checkpoint-0_temp/'
                                                      'part; No space left on device'), 1,
         'error: cannot write a file: /e/checkpoint-0_temp/part; No space left on device'),
        (tf.errors.ResourceExhaustedError(None, None, 'OOM when allocating tensor'), 1,
         'error: TensorFlow ran out of memory (OOM when allocating tensor)'),
        (MemoryError(), 1, 'error: out of memory'),
    ]
    for error, status, message in cases:
        with pytest.raises(SystemExit) as exit_:
            cli.run(raises(error))
        assert exit_.value.code == status
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count('\n') == 1, err
    monkeypatch.setattr(sys, 'getfilesystemencoding', lambda: 'ascii')
    with pytest.raises(SystemExit):
        cli.run(raises(UnicodeEncodeError('ascii', 'é.jpg', 0, 1, 'ordinal not in range')))
    assert 'locale\'s encoding (ascii) cannot hold' in capsys.readouterr().err
    # Any other error is a defect, and keeps its traceback.
    with pytest.raises(ZeroDivisionError):
        cli.run(raises(ZeroDivisionError()))


def test_ctrl_c_while_tensorflow_loads_is_one_line():
    code = ('import checkout\ncheckout.register()\nfrom triplet_reid.cli import startup\n'
            'def interrupted():\n'
            '    raise KeyboardInterrupt\n'
            'startup.import_quietly = interrupted\n'
            'startup.quiet_tensorflow()\n')
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 130
    assert done.stderr == 'error: interrupted while starting; nothing was written.\n'


def test_leftovers_of_killed_writers_are_removed_and_living_ones_kept(tmp_path):
    import socket
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    names = {'dead_file': '.out.h5.partial-{}-{}-abc.h5'.format(host, dead),
             'dead_folder': '.out.h5.partial-{}-{}-def'.format(host, dead),
             'living': '.out.h5.partial-{}-{}-ghi.h5'.format(host, os.getpid()),
             'other_host': '.out.h5.partial-elsewhere-{}-jkl.h5'.format(dead),
             'other_target': '.other.h5.partial-{}-{}-mno.h5'.format(host, dead)}
    for key, name in names.items():
        if key == 'dead_folder':
            os.makedirs(tmp_path / name / 'inside')
        else:
            (tmp_path / name).write_text('x')
    new = files.temporary_beside(str(tmp_path / 'out.h5'), False, suffix='.h5')
    assert sorted(os.listdir(tmp_path)) == sorted(
        [names['living'], names['other_host'], names['other_target'], os.path.basename(new)])


def test_an_output_replaces_only_an_earlier_output_of_its_kind(tmp_path):
    experiment = tmp_path / 'exp'
    (experiment / 'best').mkdir(parents=True)
    (experiment / 'args.json').write_text('{}')
    for name in ('checkpoint', 'checkpoint-3.index', 'train.log', 'best.json',
                 'events.out.tfevents.1.host', 'best/checkpoint-3.index'):
        (experiment / name).write_text('{}')
        with pytest.raises(cli.UserError, match='one of the files that train.py keeps'):
            files.check_output(str(experiment / name), '--out', 'json')
    # The same names outside an experiment root are plain files.
    files.check_output(str(tmp_path / 'checkpoint'), '--out', 'json')
    (tmp_path / 'old.json').write_text('{"mAP": 0.5}')
    (tmp_path / 'empty.png').write_bytes(b'')
    (tmp_path / 'old.png').write_bytes(b'\x89PNG\r\n\x1a\n....')
    (tmp_path / 'report.html').write_text('\n<!DOCTYPE html><html></html>')
    (tmp_path / 'old.csv').write_text('query,rank,file,distance\nä,1,b,0.5\n')
    for name, kind in (('old.json', 'json'), ('empty.png', 'png'), ('old.png', 'png'),
                       ('report.html', 'html'), ('old.csv', 'csv'), ('new.h5', 'hdf5')):
        files.check_output(str(tmp_path / name), '--out', kind)
    for name, kind in (('old.json', 'png'), ('old.png', 'csv'), ('old.csv', 'json'),
                       ('report.html', 'hdf5'), ('old.png', 'html')):
        with pytest.raises(cli.UserError, match='exists and is not an? {} file'.format(
                kind.upper())):
            files.check_output(str(tmp_path / name), '--out', kind)
    # An input, also through a link; a link to nothing; a device; a pipe.
    (tmp_path / 'link.json').symlink_to(tmp_path / 'old.json')
    with pytest.raises(cli.UserError, match='the same file as --in'):
        files.check_output(str(tmp_path / 'link.json'), '--out', 'json',
                           [('--in', str(tmp_path / 'old.json'))])
    (tmp_path / 'dangling.json').symlink_to(tmp_path / 'gone.json')
    os.mkfifo(tmp_path / 'pipe.json')
    for path, message in ((tmp_path / 'dangling.json', 'a link to .*gone.json.*does not exist'),
                          ('/dev/full', 'not a regular file'),
                          (tmp_path / 'pipe.json', 'not a regular file')):
        with pytest.raises(cli.UserError, match=message):
            files.check_output(str(path), '--out', 'json')


def test_a_bom_crlf_line_ends_and_a_quoted_identity_with_a_comma_are_read(tmp_path):
    """Accepted, as docs/datasets.md says: what spreadsheets and Windows editors save."""
    path = tmp_path / 'excel.csv'
    path.write_bytes(b'\xef\xbb\xbf"Smith, J",a/1.jpg\r\n"Smith, J",a/2.jpg\r\n0002,b/3.jpg\r\n')
    assert common.read_csv_rows(str(path)) == [('Smith, J', 'a/1.jpg'), ('Smith, J', 'a/2.jpg'),
                                               ('0002', 'b/3.jpg')]



def test_messages_cut_what_they_quote_from_files(capsys):
    # A refusal quoted a 1,200-character YAML value whole; every quote in a
    # UserError, and in a log line, is cut in the middle and says so.
    value = 'v' * 1200
    text = str(cli.UserError('`cfg.yml` sets X to `{}`; what imports is Y.'.format(value)))
    assert text.startswith('`cfg.yml` sets X to `' + 'v' * 160 + ' … ')
    assert text.endswith(' (1200 characters)`; what imports is Y.') and len(text) < 400
    assert len(str(cli.UserError('w' * 100000))) < cli.MAX_MESSAGE + 100
    assert str(cli.UserError('short `x`')) == 'short `x`'
    import logging
    cli.setup_logging(buffer=False)
    logging.getLogger('test').warning('Skipping %s.', '`{}`'.format(value))
    err = capsys.readouterr().err
    assert '(1200 characters)`' in err and len(err) < 400
