"""files.output, the one way every output is written, and the check that
every writer of the product goes through it."""

import ast
import glob
import os
import stat
import subprocess
import sys

import pytest

from triplet_reid import cli
from triplet_reid.storage import files, json_files
from conftest import ROOT


def test_an_output_appears_whole_with_open_permissions_and_nothing_beside_it(tmp_path):
    path = str(tmp_path / 'sub' / 'out.txt')
    with files.output(path) as partial:
        assert os.path.dirname(partial) == os.path.dirname(path) and not os.path.exists(path)
        with open(partial, 'w') as f:
            f.write('one')
    assert open(path).read() == 'one' and os.listdir(tmp_path / 'sub') == ['out.txt']
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    files.atomic_write(path, 'two')
    assert open(path).read() == 'two' and os.listdir(tmp_path / 'sub') == ['out.txt']


def test_a_failing_writer_leaves_the_old_output_and_no_temporary(tmp_path):
    path = str(tmp_path / 'out.txt')
    files.atomic_write(path, 'old')
    for directory in (False, True):
        target = path if not directory else str(tmp_path / 'folder')
        if directory:
            files.write_folder(target, lambda folder: open(os.path.join(folder, 'f'), 'w').close())
        with pytest.raises(RuntimeError), files.output(target, directory=directory) as partial:
            open(os.path.join(partial, 'g') if directory else partial, 'w').write('new')
            raise RuntimeError('disk error')
    assert open(path).read() == 'old' and os.listdir(tmp_path / 'folder') == ['f']
    assert sorted(os.listdir(tmp_path)) == ['folder', 'out.txt']


@pytest.mark.parametrize('directory', [False, True])
def test_without_replace_an_output_that_exists_or_appears_is_kept(tmp_path, directory):
    path = str(tmp_path / 'model')
    with pytest.raises(cli.UserError, match='appeared while it was being written'):
        with files.output(path, directory=directory, replace=False) as partial:
            open(os.path.join(partial, 'mine') if directory else partial, 'w').write('mine')
            # Another process puts its output in place meanwhile.
            if directory:
                os.makedirs(os.path.join(path))
                open(os.path.join(path, 'theirs'), 'w').write('theirs')
            else:
                open(path, 'w').write('theirs')
    assert os.listdir(tmp_path) == ['model']
    assert open(os.path.join(path, 'theirs') if directory else path).read() == 'theirs'
    with pytest.raises(cli.UserError, match='appeared while'):
        with files.output(path, directory=directory, replace=False):
            pass


def test_an_output_that_would_harm_a_file_is_refused_before_the_block(tmp_path):
    experiment = tmp_path / 'exp'
    experiment.mkdir()
    (experiment / 'args.json').write_text('{}')
    source = tmp_path / 'in.csv'
    source.write_text('a,b.jpg\n')
    (tmp_path / 'dangling').symlink_to(tmp_path / 'nowhere')
    for path, kwargs, message in (
            (experiment / 'args.json', {}, 'keeps in the experiment root'),
            (source, {'inputs': [('--dataset', str(source))], 'flag': '--out'},
             '--out .* is the same file as --dataset'),
            (tmp_path / 'dangling', {}, 'is a link to'),
            ('/dev/null', {}, 'not a regular file')):
        with pytest.raises(cli.UserError, match=message):
            with files.output(str(path), **kwargs):
                raise AssertionError('the block ran')
    assert (experiment / 'args.json').read_text() == '{}' and source.read_text() == 'a,b.jpg\n'
    files.write_json(str(experiment / 'args.json'), {'a': 1}, experiment=True)
    assert (experiment / 'args.json').read_text() == '{\n  "a": 1\n}\n'


def test_the_temporary_of_a_killed_writer_is_removed_by_the_next_one(tmp_path):
    path = str(tmp_path / 'out.txt')
    code = ('import os, sys; sys.path.insert(0, {!r}); import checkout; checkout.register()\n'
            'from triplet_reid.storage import files\n'
            'with files.output({!r}) as partial:\n'
            '    open(partial, "w").write("half")\n'
            '    os.kill(os.getpid(), 9)\n').format(ROOT, path)
    assert subprocess.run([sys.executable, '-c', code]).returncode == -9
    assert len(os.listdir(tmp_path)) == 1 and not os.path.exists(path)
    files.atomic_write(path, 'whole')
    assert os.listdir(tmp_path) == ['out.txt'] and open(path).read() == 'whole'


# Every writer goes through files.output.
###

WRITE_MODES = set('wax+')
# Calls that write or move files wherever they appear.
WRITING_CALLS = {
    ('os', 'replace'), ('os', 'rename'), ('os', 'link'), ('os', 'fdopen'), ('shutil', 'move'),
    ('shutil', 'copy'), ('shutil', 'copy2'), ('shutil', 'copyfile'), ('shutil', 'copytree'),
    ('tempfile', 'mkstemp'), ('tempfile', 'mkdtemp'), ('tempfile', 'NamedTemporaryFile'),
    ('np', 'save'), ('np', 'savez'), ('np', 'savetxt'), ('np', 'memmap')}
# Methods that write files (PIL's and Keras' save, matplotlib's savefig, tf2onnx's converter).
WRITING_METHODS = {'save', 'save_weights', 'savefig', 'to_csv', 'write_bytes', 'write_text',
                   'from_function'}

# The functions of the product that write without files.output, and why.
NOT_OUTPUTS = {
    ('data/convert.py', 'extract_cuhk03_images.extract'):
        'fills the temporary folder that files.write_folder gives it',
    ('data/make_demo.py', 'generate'): 'fills the temporary folder of files.write_folder',
    ('data/make_demo.py', 'generate.save'): 'fills the temporary folder of files.write_folder',
    ('data/make_glyphs.py', 'generate'): 'fills the temporary folder of files.write_folder',
    ('data/make_footage.py', 'render_camera'): 'fills the temporary folder of files.write_folder',
    ('data/make_footage.py', 'generate_network'):
        'fills the temporary folder of files.write_folder',
    ('data/convert_mtmc.py', 'write'): 'fills the temporary folder of files.write_folder',
    ('associate.py', 'write_outputs.write'): 'fills the temporary folder of files.write_folder',
    ('data/footage_crops.py', 'write'): 'fills the temporary folder of files.write_folder',
    ('data/make_video_demo.py', 'write_csv'): 'fills the temporary folder of files.write_folder',
    ('training/detailed_logs.py', 'create_or_resize_dat'):
        'a memory-mapped log that training fills step by step and resizes on resume',
    ('experiment/__init__.py', 'locked_directory'): 'the lock file, held open while train.py runs',
    ('storage/locks.py', 'locked'):
        'the lock file of a gallery or association state, held open while it changes',
    ('inputs/footage.py', 'crop_detections'):
        'crops into the temporary folder that embed.py embeds them from and then removes',
    ('evaluation/html_report.py', 'image_uri'):
        'a JPEG in memory (io.BytesIO), inlined in the page',
    ('evaluation/visualize.py', '_save'): 'a PNG in memory (io.BytesIO), then files.atomic_write',
    ('train.py', 'train'): 'checkpoint-0, through training.run.save',
    ('training/run.py', 'save'): 'a checkpoint: TensorFlow writes it and renames its index into '
                             'place, and checkpoints.newest_checkpoint takes only complete ones',
    ('training/run.py', 'make_validator.run_validation'):
        'a best/ checkpoint, as training.run.save',
}


def _mode(call, position):
    node = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == 'mode'), ast.Constant('r'))
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else 'w'


def writes(call):
    """Whether the call `call` (an ast.Call) writes, renames or makes a file."""
    function = call.func
    if isinstance(function, ast.Name):
        return function.id == 'open' and bool(set(_mode(call, 1)) & WRITE_MODES)
    if not isinstance(function, ast.Attribute):
        return False
    owner = function.value.id if isinstance(function.value, ast.Name) else None
    if (owner, function.attr) == ('h5py', 'File'):
        return _mode(call, 1) != 'r'
    return (owner, function.attr) in WRITING_CALLS or function.attr in WRITING_METHODS


def uses_output(function):
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and
               node.func.attr == 'output' and isinstance(node.func.value, ast.Name) and
               node.func.value.id == 'files' for node in ast.walk(function))


def writers_outside_output(source, path):
    """{(path, dotted function name): line numbers} of the write calls in the
    Python `source` that no enclosing function routes through files.output."""
    found = {}

    def visit(node, functions):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, functions + [child])
                continue
            if isinstance(child, ast.Call) and writes(child) and \
                    not any(uses_output(f) for f in functions):
                name = '.'.join(f.name for f in functions) or '<module>'
                found.setdefault((path, name), []).append(child.lineno)
            visit(child, functions)
    visit(ast.parse(source), [])
    return found


def test_the_writer_scan_finds_writes_outside_output():
    source = ('def bad(p):\n    open(p, "w").write("x")\n'
              'def fine(p):\n    with files.output(p) as t:\n        open(t, "wb").write(b"")\n'
              'def reads(p):\n    return open(p).read(), h5py.File(p, "r")\n'
              'def renames(a, b):\n    os.replace(a, b)\n'
              'def hdf5(p):\n    h5py.File(p, "w")\n')
    assert set(writers_outside_output(source, 'x.py')) == {
        ('x.py', 'bad'), ('x.py', 'renames'), ('x.py', 'hdf5')}


def test_every_writer_of_the_product_goes_through_files_output():
    paths = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, '*', '*.py'))
    found = {}
    for path in sorted(paths):
        relative = os.path.relpath(path, ROOT)
        if relative.split(os.sep)[0] in ('tests', 'bench', 'docs') or \
                relative == os.path.join('storage', 'files.py'):
            continue
        with open(path) as f:
            found.update(writers_outside_output(f.read(), relative))
    new = {key: lines for key, lines in found.items() if key not in NOT_OUTPUTS}
    assert not new, 'write through files.output (or files.atomic_write, write_json, ' \
        'write_folder), or say in NOT_OUTPUTS why not: {}'.format(new)
    assert not set(NOT_OUTPUTS) - set(found), 'no longer writing: {}'.format(
        sorted(set(NOT_OUTPUTS) - set(found)))


def test_json_read_from_a_user_is_bounded(tmp_path):
    path = tmp_path / 'args.json'
    for text, match in (('[' * 100000 + ']' * 100000, r'nested deeper than 64 levels'),
                        ('{"a": ' + '[' * 65 + ']' * 65 + '}', r'nested deeper than 64 levels'),
                        ('[1]', 'not a JSON object'), ('\xff', 'corrupt')):
        path.write_text(text, encoding='latin-1')
        with pytest.raises(cli.UserError, match=r'args\.json` is corrupt \(.*{}.*\); fix'.format(
                match) if match != 'corrupt' else 'is corrupt'):
            json_files.read_json(str(path), 'fix it')
    path.write_text('{"a": ' + '[' * 63 + ']' * 63 + '}')
    value = json_files.read_json(str(path), 'fix it')['a']
    for _ in range(62):
        value = value[0]
    assert value == []
    os.remove(path)
    os.mkfifo(path)
    with pytest.raises(cli.UserError, match='is not a regular file'):
        json_files.read_json(str(path), 'fix it')
    with pytest.raises(ValueError, match='nested deeper'):
        json_files.parse_json('{"TF_CONFIG": ' + '[' * 5000 + ']' * 5000 + '}')


def test_a_folder_output_behind_a_link_is_replaced_where_the_link_points(tmp_path):
    (tmp_path / 'real').mkdir()
    (tmp_path / 'real' / 'old.txt').write_text('old')
    (tmp_path / 'link').symlink_to(tmp_path / 'real')

    def make(folder):
        with open(os.path.join(folder, 'new.txt'), 'w') as f:
            f.write('new')
    files.write_folder(str(tmp_path / 'link'), make)
    assert os.path.islink(tmp_path / 'link')
    assert sorted(os.listdir(tmp_path / 'real')) == ['new.txt']
