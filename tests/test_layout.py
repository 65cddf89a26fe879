"""The project's shape: plug-in folders match their choices, and the import
graph of the top-level modules has no script imported and no cycle."""

import ast
import glob
import argparse
import os
import shutil
import site
import subprocess
import sys
from importlib import import_module

import pytest

from conftest import ROOT

SCRIPTS = ('train.py', 'embed.py', 'evaluate.py', 'export.py', 'search.py', 'import_model.py',
           'associate.py')


@pytest.mark.parametrize('folder, choices', [
    ('nets', 'NET_CHOICES'), ('heads', 'HEAD_CHOICES'), ('excluders', 'EXCLUDER_CHOICES'),
    ('temporal', 'TEMPORAL_CHOICES')])
def test_choices_are_the_plugin_files(folder, choices):
    files = {os.path.basename(path)[:-3]
             for path in glob.glob(os.path.join(ROOT, folder, '*.py'))
             if not os.path.basename(path).startswith('_')}
    declared = getattr(import_module('triplet_reid.' + folder), choices)
    assert len(set(declared)) == len(declared), 'a choice is listed twice'
    assert set(declared) == files


def test_flags_name_the_loss_functions():
    from triplet_reid.cli import flags
    from triplet_reid import loss
    assert flags.LOSSES == tuple(loss.LOSS_CHOICES)
    assert flags.ID_LOSSES == tuple(loss.ID_LOSSES)


def test_flags_name_the_temporal_plugins():
    from triplet_reid.cli import flags
    from triplet_reid import temporal
    assert flags.TEMPORAL_POOLINGS == temporal.TEMPORAL_CHOICES


def test_last_stride_nets_are_those_whose_body_takes_it():
    import inspect
    from triplet_reid import nets
    takes = {name for name in nets.NET_CHOICES if 'last_stride' in inspect.signature(
        import_module('triplet_reid.nets.' + name).body).parameters}
    assert set(nets.LAST_STRIDE_NETS) == takes


def test_pooling_nets_are_those_whose_body_takes_it():
    import inspect
    from triplet_reid import nets
    takes = {name for name in nets.NET_CHOICES if 'pooling' in inspect.signature(
        import_module('triplet_reid.nets.' + name).body).parameters}
    assert set(nets.POOLING_NETS) == takes


def test_padding_nets_are_those_whose_body_takes_it():
    import inspect
    from triplet_reid import nets
    takes = {name for name in nets.NET_CHOICES if 'padding' in inspect.signature(
        import_module('triplet_reid.nets.' + name).body).parameters}
    assert set(nets.PADDING_NETS) == takes


def ours(name):
    """A dotted module name within the package triplet_reid (`storage.files` for
    `triplet_reid.storage.files`), '' for the package, None for another's."""
    if name == 'triplet_reid':
        return ''
    return name[len('triplet_reid.'):] if name.startswith('triplet_reid.') else None


def imported_modules(path):
    """The top-level names, within the package, of the modules the file
    `path` imports, from its syntax tree (imports inside functions included)."""
    return {name.split('.')[0] for name in imported_names(path) if name}


# The library, one concern per folder, and the plug-in folders; beside them at
# the root only the commands and the original's names.
LIBRARY_FOLDERS = ('cli', 'storage', 'experiment', 'inputs', 'models', 'training',
                   'evaluation', 'serving')
PLUGIN_FOLDERS = ('nets', 'heads', 'excluders', 'temporal')
ROOT_MODULES = ('common', 'loss', 'uninterrupt', 'aggregators', 'layers')
# What makes the root the package triplet_reid, installed or in a checkout.
PACKAGE_FILES = ('__init__.py', 'checkout.py')
# The folders that hold no library: data converters and demo sets, recipes,
# benchmarks, the manual, the tests.
OTHER_FOLDERS = ('data', 'recipes', 'bench', 'docs', 'tests')


def product_modules():
    """{module name: path} for the root's files and those of the library and
    plug-in folders; a folder's `__init__.py` goes by the folder's name."""
    modules = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, '*.py'))
               if os.path.basename(p) not in PACKAGE_FILES}
    for folder in LIBRARY_FOLDERS + PLUGIN_FOLDERS:
        for path in glob.glob(os.path.join(ROOT, folder, '*.py')):
            name = os.path.basename(path)[:-3]
            modules[folder if name == '__init__' else folder + '.' + name] = path
    return modules


def imported_names(path):
    """Every dotted name within the package that the file `path` may import,
    with the packages above each (`from triplet_reid.storage import files`
    imports `storage` and, if it is a module, `storage.files`)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update(node.module + '.' + alias.name for alias in node.names)
    names = {ours(name) for name in names} - {None, ''}
    return {'.'.join(name.split('.')[:i + 1]) for name in names
            for i in range(len(name.split('.')))}


def module_graph():
    """{module: set of the product's modules it imports}, for every product
    module (see `product_modules`)."""
    modules = product_modules()
    return {name: imported_names(path) & set(modules) - {name}
            for name, path in modules.items()}


def folder_of(module):
    """The folder a module lives in; the root's library modules are '.', the
    commands 'commands'."""
    top = module.split('.')[0]
    if top + '.py' in SCRIPTS:
        return 'commands'
    return top if top in LIBRARY_FOLDERS + PLUGIN_FOLDERS else '.'


def test_the_root_holds_the_commands_and_the_originals_names():
    root = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, '*.py'))
            if os.path.basename(p) not in PACKAGE_FILES}
    assert root == {s[:-3] for s in SCRIPTS} | set(ROOT_MODULES)
    folders = {name for name in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, name))
               and not name.startswith('.') and glob.glob(os.path.join(ROOT, name, '*.py'))}
    assert folders <= set(LIBRARY_FOLDERS + PLUGIN_FOLDERS + OTHER_FOLDERS), folders
    # No folder shadows a command (a search/ beside search.py) or another.
    for folder in LIBRARY_FOLDERS + PLUGIN_FOLDERS:
        assert not os.path.exists(os.path.join(ROOT, folder + '.py')), folder
    assert len(set(LIBRARY_FOLDERS + PLUGIN_FOLDERS + OTHER_FOLDERS)) == \
        len(LIBRARY_FOLDERS + PLUGIN_FOLDERS + OTHER_FOLDERS)


def test_no_module_imports_a_script():
    graph = module_graph()
    for script in SCRIPTS:
        importers = sorted(name for name, imported in graph.items()
                           if script[:-3] in imported)
        assert not importers, '{} is imported by {}'.format(script, importers)


def test_folders_import_one_way():
    """Between folders, imports run one way: from the commands down through
    training, serving, models, the plug-ins, the root's modules, evaluation,
    the experiment's records and the files on disk to the command-line
    support, never back."""
    folders = {}
    for module, imported in module_graph().items():
        folders.setdefault(folder_of(module), set()).update(
            folder_of(other) for other in imported)
    folders = {folder: imported - {folder} for folder, imported in folders.items()}
    assert find_cycle(folders) is None, find_cycle(folders)
    assert not folders['cli'], 'the command-line support imports {}'.format(folders['cli'])
    assert folders['storage'] <= {'cli'}, folders['storage']
    assert folders['experiment'] <= {'storage', 'cli', 'nets'}, folders['experiment']


def test_benchmarks_import_library_modules_only():
    scripts = {script[:-3] for script in SCRIPTS}
    for path in sorted(glob.glob(os.path.join(ROOT, 'bench', '*.py'))):
        imported = imported_modules(path) & scripts
        assert not imported, '{} imports the script(s) {}'.format(
            os.path.relpath(path, ROOT), sorted(imported))


def test_benchmark_results_live_apart_and_are_all_reported():
    """bench/ holds programs; their JSON results are in bench/results/, each
    named in bench/RESULTS.md, where the figures are told."""
    assert not glob.glob(os.path.join(ROOT, 'bench', '*.json'))
    with open(os.path.join(ROOT, 'bench', 'RESULTS.md')) as f:
        report = f.read()
    results = sorted(glob.glob(os.path.join(ROOT, 'bench', 'results', '*.json')))
    assert results
    unreported = [os.path.relpath(p, ROOT) for p in results
                  if os.path.relpath(p, ROOT) not in report]
    assert not unreported


def product_files():
    """The Python files of the product: the repository root and its folders,
    without the tests, the benchmarks and the documentation's helpers."""
    paths = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, '*', '*.py'))
    return sorted(p for p in paths
                  if os.path.relpath(p, ROOT).split(os.sep)[0] not in ('tests', 'bench', 'docs'))


def test_no_function_is_longer_than_a_screen():
    """Outside the tests and benchmarks, no function holds more than 60
    lines besides its docstring."""
    long = []
    for path in product_files():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            if ast.get_docstring(node) is not None:
                lines -= node.body[0].end_lineno - node.body[0].lineno + 1
            if lines > 60:
                long.append('{}:{} ({} lines)'.format(os.path.relpath(path, ROOT), node.name,
                                                      lines))
    assert not long, long


# The command lines, whose parsers make them longer than a module.
COMMAND_LINES = SCRIPTS + ('data/convert.py', 'data/make_demo.py', 'data/make_glyphs.py',
                            'data/make_footage.py')


def test_no_library_module_is_longer_than_500_lines():
    long = []
    for path in product_files():
        with open(path) as f:
            lines = len(f.read().splitlines())
        if os.path.relpath(path, ROOT) not in COMMAND_LINES and lines > 500:
            long.append('{} ({} lines)'.format(os.path.relpath(path, ROOT), lines))
    assert not long, long


def test_train_py_is_the_command_line():
    # 475 lines, and the five that make a checkout the package (checkout.py).
    with open(os.path.join(ROOT, 'train.py')) as f:
        assert len(f.read().splitlines()) < 480 + 5


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    state = {}

    def visit(name, path):
        if state.get(name) == 'done':
            return None
        if state.get(name) == 'open':
            return path[path.index(name):] + [name]
        state[name] = 'open'
        for other in sorted(graph.get(name, ())):
            cycle = visit(other, path + [name])
            if cycle:
                return cycle
        state[name] = 'done'
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_import_graph_has_no_cycle():
    assert find_cycle(module_graph()) is None


def test_the_cycle_check_finds_cycles():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


@pytest.mark.parametrize('module', ['cli/__init__.py', 'common.py', 'storage/files.py',
                                    'cli/flags.py', 'storage/json_files.py', 'cli/patterns.py'])
def test_the_shared_modules_do_not_import_tensorflow(module):
    with open(os.path.join(ROOT, module)) as f:
        tree = ast.parse(f.read())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {n for n in names if n and n.split('.')[0] in ('tensorflow', 'keras')}


# The scripts' --help, and an argument error, must answer before TensorFlow
# (or anything else that takes seconds) is imported; bench/help.py times them.
HEAVY = ('tensorflow', 'keras', 'torch', 'tf2onnx', 'faiss', 'matplotlib')
FAST_HELP = COMMAND_LINES


def modules_after(argv):
    """The heavy modules imported by running `argv` (a script and its
    arguments) as __main__ until it exits, in a fresh interpreter."""
    code = ('import runpy, sys\n'
            'sys.argv = {!r}\n'
            'sys.path.insert(0, {!r})\n'
            'try:\n'
            '    runpy.run_path(sys.argv[0], run_name="__main__")\n'
            'except SystemExit:\n'
            '    pass\n'
            'print(sorted(m for m in {!r} if m in sys.modules))\n').format(
                list(argv), os.path.dirname(os.path.join(ROOT, argv[0])), HEAVY)
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    return done.stdout.splitlines()[-1], done.stdout + done.stderr


@pytest.mark.parametrize('script', FAST_HELP)
def test_help_imports_nothing_heavy(script):
    imported, output = modules_after([script, '--help'])
    assert imported == '[]', output
    assert 'usage:' in output


@pytest.mark.parametrize('argv', [
    ['train.py', '--experiment_root', 'x', '--model_name', 'nonet'],
    ['embed.py', '--experiment_root', 'x', '--dataset', 'a.csv', '--batch_size', '0'],
    ['search.py', '--experiment_root', 'x', '--gallery', 'g.h5', '--metric', 'hamming'],
    ['search.py', '--gallery', 'g.h5', '--experiment_root', 'x'],
    ['export.py'],
])
def test_an_argument_error_imports_nothing_heavy(argv):
    imported, output = modules_after(argv)
    assert imported == '[]', output
    assert 'error:' in output


def test_train_help_groups_its_flags():
    from triplet_reid import train
    titles = [group.title for group in train.parser._action_groups]
    assert titles[2:] == ['experiment', 'data', 'model', 'loss', 'optimiser', 'augmentation',
                          'validation', 'checkpoints', 'performance', 'distribution',
                          'pseudo-labels', 'video']
    # Every flag but --help is in one of the named groups.
    assert not [a.dest for a in train.parser._action_groups[1]._group_actions
                if a.dest != 'help']


def actions(parser):
    """Every action of `parser` and of its subcommands' parsers."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from actions(subparser)


@pytest.mark.parametrize('script', FAST_HELP)
def test_every_float_flag_has_an_upper_bound(script, monkeypatch):
    from conftest import parser_of
    floats = []
    for action in actions(parser_of(script, monkeypatch)):
        try:
            if action.type is None or not isinstance(action.type('0.5'), float):
                continue
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
        floats.append(action.dest)
        for value in ('1e40', 'inf', 'nan', '-1'):
            with pytest.raises((argparse.ArgumentTypeError, ValueError)):
                action.type(value)
    assert floats or script not in ('train.py', 'evaluate.py', 'search.py'), script



def test_no_parser_takes_abbreviations():
    """Every argument parser, the benchmarks' and the docs' helpers' too,
    refuses abbreviated flags: `train.py --train_iteration 10` was taken as
    --train_iterations, and flags that share a prefix make an abbreviation a
    trap in scripts."""
    paths = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, '*', '*.py'))
    taking = []
    for path in sorted(p for p in paths if os.sep + 'tests' + os.sep not in p):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == \
                    'ArgumentParser' and not any(
                        k.arg == 'allow_abbrev' and getattr(k.value, 'value', True) is False
                        for k in node.keywords):
                taking.append('{}:{}'.format(os.path.relpath(path, ROOT), node.lineno))
    assert not taking, 'parsers that take abbreviations: {}'.format(taking)


@pytest.mark.parametrize('script, argv, flag', [
    ('train', ['--experiment_root', 'x', '--train_iteration', '10'], '--train_iteration'),
    ('embed', ['--experiment_root', 'x', '--dataset', 'a.csv', '--filen', 'a.h5'], '--filen'),
    ('evaluate', ['--excluder', 'market1501', '--query_dataset', 'q', '--gallery_dataset', 'g',
                  '--query_embeddings', 'q.h5', '--gallery_embeddings', 'g.h5', '--metric',
                  'euclidean', '--filen', 'e.json'], '--filen'),
    ('search', ['search', '--gallery', 'g.h5', '--query_embeddings', 'q.h5', '--top', '3'],
     '--top'),
    ('export', ['--experiment_root', 'x', '--onn', 'm.onnx'], '--onn'),
    ('import_model', ['--weights', 'w.pth', '--experiment_root', 'x', '--model', 'osnet'],
     '--model'),
])
def test_an_abbreviated_flag_is_refused(script, argv, flag, capsys):
    parser = import_module(script).parser
    with pytest.raises(SystemExit) as raised:
        parser.parse_args(argv)
    assert raised.value.code == 2
    assert 'unrecognized arguments: {}'.format(flag) in capsys.readouterr().err


def test_test_modules_share_helpers_through_the_conftest_only():
    """conftest.py holds what several test modules use; no test module
    imports another, so each can run, move or be deleted alone."""
    importing = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'tests', 'test_*.py'))):
        with open(path) as f:
            tree = ast.parse(f.read())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names} | {node.module for node in ast.walk(tree) if
                                             isinstance(node, ast.ImportFrom) and node.module}
        if any(name.split('.')[0].startswith('test_') for name in names):
            importing.append(os.path.basename(path))
    assert not importing


def source_copy(tmp_path):
    """What `pip install .` of a clean checkout reads: the repository without
    its tests, benchmarks, manual, generated data and build leftovers."""
    source = tmp_path / 'source'
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        name for name in names if name.startswith('.') or name in (
            '__pycache__', 'build', 'experiments', 'tests', 'bench', 'docs', 'demo', 'footage')
        or name.endswith('.egg-info')])
    return source


def test_pip_install_gives_one_package_the_commands_and_the_recipes(tmp_path):
    """`pip install .` (pyproject.toml) installs the library as the one
    package triplet_reid, with the recipes and the converters, and the six
    commands under their `reid-` names, which run from anywhere; nothing else
    lands at the top of site-packages, where `evaluate` or `models` would
    shadow other libraries."""
    source = source_copy(tmp_path)
    target = tmp_path / 'installed'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                    '--no-deps', '--no-build-isolation', '--no-index', '--target', str(target),
                    str(source)], check=True, timeout=300)
    assert sorted(name for name in os.listdir(target) if not name.endswith('.dist-info')) == [
        'bin', 'triplet_reid']
    package = target / 'triplet_reid'
    assert sorted(os.listdir(package / 'recipes')) == sorted(
        os.listdir(os.path.join(ROOT, 'recipes')))
    assert {'train.py', 'common.py', 'loss.py', 'checkout.py'} <= set(os.listdir(package))
    assert 'convert.py' in os.listdir(package / 'data')
    env = dict(os.environ, PYTHONPATH=str(target))
    # The Python API, from the package, with nothing of the checkout on the path.
    done = subprocess.run([sys.executable, '-c', 'import triplet_reid, sys; '
                           'print(triplet_reid.load_embedder.__module__, triplet_reid.__file__, '
                           '"evaluate" in sys.modules)'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ['triplet_reid.models.inference',
                                   str(package / '__init__.py'), 'False'], done.stderr
    for script in SCRIPTS:
        command = 'reid-' + script[:-3].replace('_', '-')
        done = subprocess.run([str(target / 'bin' / command), '--help'], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith('usage: ' + command), done
    # A recipe by name, found beside the installed library; the bad net is
    # refused after the recipe's flags were read.
    done = subprocess.run([str(target / 'bin' / 'reid-train'), '@trinet', '--experiment_root',
                           'x', '--model_name', 'nonet'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'nonet'" in done.stderr, done.stderr


@pytest.mark.slow
def test_installed_beside_hugging_face_evaluate(tmp_path):
    """In a fresh virtual environment that has Hugging Face's `evaluate`
    first, `pip install .` adds the package and its commands, and both
    libraries work: neither shadows the other's names."""
    source = source_copy(tmp_path)
    fresh = tmp_path / 'fresh'
    subprocess.run([sys.executable, '-m', 'venv', str(fresh)], check=True, timeout=300)
    # The new environment sees the suite's own libraries after its own, so
    # that pip finds TensorFlow and the rest installed and adds only what
    # `evaluate` and the package bring: a copy of them would cost the suite
    # 3 GiB of disk and a minute and a half for no part of what is tested.
    fresh_site = subprocess.run(
        [str(fresh / 'bin' / 'python'), '-c', 'import site; print(site.getsitepackages()[0])'],
        check=True, capture_output=True, text=True, timeout=300).stdout.strip()
    with open(os.path.join(fresh_site, 'suite_libraries.pth'), 'w') as f:
        f.write('\n'.join(site.getsitepackages()) + '\n')
    pip = [str(fresh / 'bin' / 'python'), '-m', 'pip', 'install', '-q',
           '--disable-pip-version-check']
    # The release this was measured with; any other shows the same.
    subprocess.run(pip + ['evaluate==0.4.6'], check=True, timeout=900)
    subprocess.run(pip + [str(source)], check=True, timeout=1500)
    env = dict(os.environ, HF_HUB_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='3')
    env.pop('PYTHONPATH', None)
    for command in ('reid-evaluate', 'reid-train'):
        done = subprocess.run([str(fresh / 'bin' / command), '--help'], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.startswith('usage: ' + command), done
    # Hugging Face's evaluate.load, and ours beside it: the API and the command's module.
    check = ('import evaluate\n'
             'from triplet_reid import load_embedder\n'
             'import triplet_reid.evaluate as ours\n'
             'print(callable(evaluate.load), evaluate.__file__.endswith("evaluate/__init__.py"), '
             'load_embedder.__module__, ours.__name__)\n')
    done = subprocess.run([str(fresh / 'bin' / 'python'), '-c', check], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['True', 'True', 'triplet_reid.models.inference',
                                   'triplet_reid.evaluate'], done.stdout


def test_every_import_of_the_project_goes_through_the_package():
    """`import common` or `from cli import files` works in a checkout, whose
    folder is on sys.path, and fails once installed, where only triplet_reid
    is: every file imports the project as `triplet_reid.…`."""
    names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, '*.py'))
             if os.path.basename(p) not in PACKAGE_FILES}
    names |= set(LIBRARY_FOLDERS + PLUGIN_FOLDERS) | {'data', 'recipes'}
    bare = []
    for path in sorted(glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True)):
        relative = os.path.relpath(path, ROOT)
        if relative.split(os.sep)[0] in ('.venv', 'experiments'):
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            found = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            bare += ['{}:{} {}'.format(relative, node.lineno, name) for name in found
                     if name.split('.')[0] in names]
    assert not bare, bare
