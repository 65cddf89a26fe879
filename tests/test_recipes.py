"""The recipes: files of train.py flags in recipes/, read as `@FILE` or
`@NAME`, each a valid command line that trains, and the docs point at them."""

import json
import os
import re

import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.cli import flags
from triplet_reid import train
from conftest import ROOT, base_args, make_dataset
from triplet_reid.models.build import build_model

RECIPES = sorted(name[:-len('.args')] for name in os.listdir(os.path.join(ROOT, 'recipes'))
                 if name.endswith('.args'))


def test_recipes_are_named_where_users_look():
    assert RECIPES == ['cpu_finetune', 'cpu_scratch', 'demo', 'strong_baseline', 'transreid',
                       'trinet', 'zoo_adapt']
    epilog = set(re.findall(r'@([a-z_]+)', train.parser.epilog))
    assert epilog == set(RECIPES)
    docs = open(os.path.join(ROOT, 'docs', 'training.md'), encoding='utf-8').read()
    assert all('@' + name in docs for name in RECIPES)
    assert 'train.py @recipes/demo.args' in open(os.path.join(ROOT, 'Makefile')).read()


def test_argument_files_are_split_as_a_shell_splits_with_comments(tmp_path):
    path = tmp_path / 'r.args'
    path.write_text('# a comment\n--batch_p 8 --batch_k 2  # trailing\n\n'
                    '--train_set "my data/train.csv"\n')
    assert flags.expand_argument_files(['--seed', '1', '@' + str(path), '--batch_p', '4']) == [
        '--seed', '1', '--batch_p', '8', '--batch_k', '2', '--train_set', 'my data/train.csv',
        '--batch_p', '4']
    # A recipe by name, and flags after it override its own.
    args = train.parser.parse_args(flags.expand_argument_files(
        ['@trinet', '--experiment_root', 'e', '--train_set', 't.csv', '--batch_p', '4',
         '--no-flip_augment']))
    assert (args.model_name, args.batch_p, args.batch_k) == ('resnet_v1_50', 4, 4)
    assert not args.flip_augment and args.crop_augment


def test_bad_argument_files_are_one_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Away from a checkout, as an installed command runs.
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    big = tmp_path / 'big.args'
    big.write_text('--seed 1\n' * 10000)
    quote = tmp_path / 'quote.args'
    quote.write_text('--train_set "unclosed\n')
    binary = tmp_path / 'binary.args'
    binary.write_bytes(b'--seed \xff\n')
    for arg, message in (('@/dev/zero', r'`/dev/zero` is not a file; the recipes are '
                                        r'cpu_finetune, cpu_scratch, demo'),
                         ('@' + fifo, 'is not a file'),
                         ('@nothing', r'`nothing` is not a file'),
                         ('@' + str(big), 'larger than 64 KiB'),
                         ('@' + str(quote), 'No closing quotation'),
                         ('@' + str(binary), 'cannot read the argument file'),
                         # A checkout's path to a recipe, where there is no checkout.
                         ('@recipes/trinet.args', r'`recipes/trinet.args` is not a file here '
                                                  r'.* comes with this installation as @trinet')):
        with pytest.raises(cli.UserError, match=message):
            train.main(['--experiment_root', str(tmp_path / 'exp'), arg])
    assert not os.path.exists(tmp_path / 'exp')


def test_an_installation_without_its_recipes_still_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(flags, 'RECIPES', str(tmp_path / 'gone'))
    assert flags.recipe_names() == []
    with pytest.raises(cli.UserError, match=r'this installation has no recipes \(`.*gone` is '
                       r'missing\); reinstall it'):
        flags.expand_argument_files(['@trinet'])


# What makes each recipe fit the tiny test set for two iterations: its
# schedule, batch and sizes; its body starts from a weights file of that
# net instead of a download (MobileNetV2 takes no less than 64×64 pixels).
SMALL = ['--train_iterations', '2', '--decay_start_iteration', '1', '--batch_p', '4',
         '--batch_k', '4', '--net_input_height', '64', '--net_input_width', '64',
         '--pre_crop_height', '72', '--pre_crop_width', '72', '--warmup_iterations', '0',
         '--lr_decay_steps', '1', '--checkpoint_frequency', '1', '--mixed_precision', 'off',
         '--no-xla', '--loading_threads', '2']


@pytest.mark.parametrize('recipe', RECIPES)
def test_each_recipe_trains(recipe, tmp_path):
    data = str(tmp_path / 'data')
    csv_path = make_dataset(data, size=(64, 32))
    root = str(tmp_path / 'exp')
    recipe_args = train.parser.parse_args(flags.expand_argument_files(
        ['@' + recipe, '--experiment_root', root, '--train_set', csv_path]))
    extra = []
    if recipe_args.initial_checkpoint:
        # A transformer's position embeddings are those of SMALL's input size.
        # With SIE, a camera embedding of make_dataset's 3 cameras.
        _, body = build_model(recipe_args.model_name, recipe_args.head_name,
                              recipe_args.embedding_dim, input_size=(64, 64),
                              patch_stride=recipe_args.patch_stride, jpm=recipe_args.jpm,
                              sie=3 if recipe_args.sie else 0)
        extra = ['--initial_checkpoint', tf.train.Checkpoint(body=body).write(
            str(tmp_path / 'body'))]
    if recipe_args.pseudo_labels:
        # Pseudo-identities start from a trained model of the recipe's
        # architecture (an imported one in use): a short supervised run. Its
        # neighbourhoods are scaled to the set's five crops per identity.
        start = str(tmp_path / 'start')
        assert train.main(base_args(start, csv_path, data, 30)[:6] + [
            '--model_name', recipe_args.model_name, '--head_name', recipe_args.head_name,
            '--embedding_dim', str(recipe_args.embedding_dim)] + SMALL[4:] + [
            '--train_iterations', '30', '--learning_rate', '1e-3',
            '--checkpoint_frequency', '30']) == 0
        extra = ['--initial_checkpoint', start, '--cluster_k1', '4', '--cluster_min_samples',
                 '2', '--camera_regex', r'_c(\d)']
    if recipe_args.val_excluder:
        extra += ['--val_query', csv_path, '--val_gallery', csv_path, '--val_every', '2']
    argv = ['@' + recipe] + base_args(root, csv_path, data, 2)[:6] + SMALL + extra
    assert train.main(argv) == 0
    written = json.load(open(os.path.join(root, 'args.json')))
    for name in ('model_name', 'head_name', 'embedding_dim', 'loss', 'margin', 'id_loss_weight',
                 'center_loss_weight', 'last_stride', 'flip_augment', 'crop_augment'):
        assert written[name] == getattr(recipe_args, name), name
    assert os.path.exists(os.path.join(root, 'checkpoint-2.index'))
