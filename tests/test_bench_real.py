"""bench/real.py's recipes are command lines that train.py accepts, with the
schedule and the protocol they say."""

import pytest

from triplet_reid import train
from bench import real


@pytest.mark.parametrize('recipe', real.RECIPES)
def test_recipes_are_valid_train_py_command_lines(recipe):
    flags, metric = real.project_flags(recipe, 1500, 128, 64, 'body.weights.h5')
    args = train.parser.parse_args(['--experiment_root', 'e', '--train_set', 't.csv',
                                    '--image_root', '.'] + flags)
    assert args.model_name == 'keras_mobilenet_v2_035'
    assert (args.initial_checkpoint == 'body.weights.h5') == (recipe != 'trinet_scratch')
    if recipe == 'bot_imagenet':
        assert (metric, args.head_name, args.embedding_dim) == ('cosine', 'fc1024_bnneck', 128)
        assert args.lr_decay_steps == [900, 1275] and args.warmup_iterations == 125
        assert args.pad_crop == 5 and args.random_erasing == 0
    else:
        assert (metric, args.head_name, args.decay_start_iteration) == ('euclidean', 'fc1024', 900)
        assert (args.pre_crop_height, args.pre_crop_width) == (144, 72)


def test_the_fine_tuning_recipe_of_a_model_zoo_file_is_a_valid_command_line():
    flags, metric = real.project_flags('zoo_finetune', 600, 128, 64, 'experiments/zoo')
    args = train.parser.parse_args(['--experiment_root', 'e', '--train_set', 't.csv',
                                    '--image_root', '.', '--model_name', 'osnet_x0_25'] + flags)
    assert (metric, args.head_name, args.embedding_dim) == ('euclidean', 'fc_bn_relu', 512)
    assert (args.net_input_height, args.net_input_width) == (256, 128) == (
        args.pre_crop_height, args.pre_crop_width)
    assert args.initial_checkpoint == 'experiments/zoo' and args.decay_start_iteration == 300
