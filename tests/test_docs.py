"""Every `.venv/bin/python X.py ...` command in README.md and docs/*.md runs
as written: each flag exists in X's parser (in the subcommand's, for
data/convert.py), and each value of a flag with choices is one of them."""

import argparse
import glob
import os
import re
import shlex

import pytest

from triplet_reid import search
from conftest import ROOT, parser_of

PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))
# Where a shell command ends.
OPERATORS = {'|', '||', '&&', ';', '>', '>>', '2>&1', '&'}


def commands(text):
    """(line number, [script, arguments...]) of every `.venv/bin/python X.py`
    command in the page's code blocks and inline code."""
    found = []
    lines = text.split('\n')
    in_block, joined, start = False, '', 0
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith('```'):
            in_block = not in_block
            continue
        if in_block:
            if not joined:
                start = number
            joined += line.rstrip('\\') + ' '
            if line.endswith('\\'):
                continue
            found += [(start, argv) for argv in split(joined)]
            joined = ''
        else:
            for span in re.findall(r'`([^`]*\.venv/bin/python [^`]*)`', line):
                found += [(number, argv) for argv in split(span)]
    return found


def split(command):
    tokens = shlex.split(command, comments=True)
    argvs = []
    for i, token in enumerate(tokens):
        if token.endswith('.venv/bin/python') and i + 1 < len(tokens) and \
                tokens[i + 1].endswith('.py'):
            argv = []
            for t in tokens[i + 1:]:
                if t in OPERATORS:
                    break
                argv.append(t)
            argvs.append(argv)
    return argvs


def placeholder(value):
    return value.startswith(('$', '<')) or '…' in value or '...' in value


def problems(parser, args):
    """What in `args` the parser would refuse: unknown flags and choices."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subcommands:
        if not args or args[0] not in subcommands[0].choices:
            return ['subcommand {!r} is not one of {}'.format(
                args[:1], sorted(subcommands[0].choices))]
        return problems(subcommands[0].choices[args[0]], args[1:])
    found = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith('--'):
            continue
        name, equals, value = token.partition('=')
        action = parser._option_string_actions.get(name)
        if action is None:
            found.append('{} is not a flag'.format(name))
            continue
        if equals:
            values = [value]
        elif action.nargs == 0:
            values = []
        else:
            values = []
            count = action.nargs if isinstance(action.nargs, int) else \
                1 if action.nargs in (None, '?') else len(args)
            while i < len(args) and len(values) < count and not args[i].startswith('--'):
                values.append(args[i])
                i += 1
        if action.choices is not None:
            allowed = {str(c) for c in action.choices}
            found += ['{} {} is not one of {}'.format(name, v, sorted(allowed))
                      for v in values if not placeholder(v) and v not in allowed]
    return found


def test_the_pages_have_commands():
    found = [c for page in PAGES for c in commands(open(os.path.join(ROOT, page)).read())]
    assert len(found) > 40
    assert {argv[0] for _, argv in found} >= {'train.py', 'embed.py', 'evaluate.py',
                                              'search.py', 'export.py', 'import_model.py',
                                              'data/convert.py'}


@pytest.mark.parametrize('page', PAGES)
def test_every_command_uses_flags_and_choices_its_script_has(page, monkeypatch):
    parsers = {}
    wrong = []
    for line, argv in commands(open(os.path.join(ROOT, page)).read()):
        script = argv[0]
        assert os.path.isfile(os.path.join(ROOT, script)), '{}:{}: no script {}'.format(
            page, line, script)
        if script not in parsers:
            parsers[script] = parser_of(script, monkeypatch)
        # search.py's mode may be left out (it searches then, or appends or
        # removes by the earlier spellings).
        args = search.with_mode(argv[1:]) if script == 'search.py' else argv[1:]
        wrong += ['{}:{}: {}: {}'.format(page, line, script, p)
                  for p in problems(parsers[script], args)]
    assert not wrong, '\n'.join(wrong)


def test_the_check_finds_wrong_flags_and_choices(monkeypatch):
    parser = parser_of('train.py', monkeypatch)
    assert problems(parser, ['--model_name', 'tiny', '--loss=batch_hard', '--flip_augment']) == []
    assert problems(parser, ['--modelname', 'tiny']) == ['--modelname is not a flag']
    assert problems(parser, ['--loss', 'hardest']) == [
        "--loss hardest is not one of ['batch_all', 'batch_all_mean', 'batch_hard', "
        "'batch_sample', 'weighted']"]
    convert = parser_of('data/convert.py', monkeypatch)
    assert problems(convert, ['market', '--dataset_root', 'x'])[0].startswith('subcommand')
    assert problems(convert, ['cuhk03', '--image_type', 'drawn'])


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@pytest.mark.parametrize('page', PAGES)
def test_every_link_finds_its_file_and_heading(page):
    # Code blocks hold no links, only code that may look like one.
    text = re.sub(r'```.*?```', '', open(os.path.join(ROOT, page)).read(), flags=re.S)
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if target.startswith(('http://', 'https://')):
            continue
        path, _, anchor = target.partition('#')
        file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
            os.path.join(ROOT, page)
        if not os.path.exists(file):
            broken.append(target)
        elif anchor and file.endswith('.md'):
            headings = re.findall(r'^#+ (.+)$', open(file).read(), re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert not broken, '{}: {}'.format(page, broken)
