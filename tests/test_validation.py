"""Validation during training: scores in TensorBoard and the log, the best
checkpoint, and no influence on the training itself."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.evaluation import metrics
from triplet_reid import train
from triplet_reid.models.inference import load_embedder, load_experiment
from conftest import base_args, checkpoint_steps, scalars, val_args, validation_csvs
from triplet_reid.excluders import market1501


def final_weights(root):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(root))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith('model/')}


def test_validation_logs_keeps_the_best_and_changes_nothing(tmp_path, tiny_dataset):
    csv_path, image_root = tiny_dataset
    query, gallery = validation_csvs(image_root)
    plain, validated = str(tmp_path / 'plain'), str(tmp_path / 'validated')
    assert train.main(base_args(plain, csv_path, image_root, 20, '--deterministic')) == 0
    assert train.main(base_args(validated, csv_path, image_root, 20, '--deterministic',
                                *val_args(query, gallery, 6))) == 0

    # The same weights (batch-norm statistics included) with and without validation.
    expected, got = final_weights(plain), final_weights(validated)
    assert expected.keys() == got.keys() and any('moving_mean' in k for k in got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)

    # Every 6 iterations and after the last, in TensorBoard and in the log.
    found = scalars(validated, 'val/')
    assert set(found) == {'val/mAP', 'val/top1', 'val/top5'}
    assert all(sorted(steps) == [6, 12, 18, 20] for steps in found.values())
    log = open(os.path.join(validated, 'train.log')).read()
    assert log.count('validation at iter') == 4
    best = json.load(open(os.path.join(validated, 'best.json')))
    assert best['mAP'] == pytest.approx(max(found['val/mAP'].values()))
    assert found['val/mAP'][best['step']] == pytest.approx(best['mAP'])
    assert best['checkpoint'] == os.path.join('best', 'checkpoint-{}'.format(best['step']))
    assert os.path.isfile(os.path.join(validated, best['checkpoint'] + '.index'))
    assert checkpoint_steps(validated) == checkpoint_steps(plain) == [0, 10, 20]

    # The best checkpoint embeds, and scores what validation said it scored.
    _, _, path = load_experiment(validated, 'best')
    assert path.endswith(best['checkpoint'])
    embedder = load_embedder(validated, 'best')
    (q_pids, q_fids), (g_pids, g_fids) = (common.load_dataset(c, image_root)
                                          for c in (query, gallery))
    q_embs, g_embs = (embedder([os.path.join(image_root, f) for f in fids])
                      for fids in (q_fids, g_fids))
    result = metrics.evaluate(q_pids, q_fids, g_pids,
                              metrics.metric_distances(q_embs, g_embs, 'euclidean'),
                              market1501.excluder(q_fids, g_fids))
    assert result['mAP'] == pytest.approx(best['mAP'], abs=1e-4)


def test_validation_added_on_resume_and_bad_input(tmp_path, tiny_dataset, interrupt_at):
    csv_path, image_root = tiny_dataset
    query, gallery = validation_csvs(image_root)
    root = str(tmp_path / 'exp')
    interrupt_at(10)
    assert train.main(base_args(root, csv_path, image_root, 14)) == 0
    assert not os.path.exists(os.path.join(root, 'best.json'))
    # Validation arguments given on resume win over the stored ones, and are stored.
    assert train.main(base_args(root, csv_path, image_root, 14,
                                *val_args(query, gallery, 4))) == 0
    assert json.load(open(os.path.join(root, 'args.json')))['val_every'] == 4
    assert sorted(scalars(root, 'val/mAP')['val/mAP']) == [12, 14]
    assert json.load(open(os.path.join(root, 'best.json')))['step'] in (12, 14)

    fresh = str(tmp_path / 'fresh')
    with pytest.raises(cli.UserError, match='needs --val_query, --val_gallery and '
                       '--val_excluder together; only --val_query'):
        train.main(base_args(fresh, csv_path, image_root, 4, '--val_query', query))
    with pytest.raises(cli.UserError, match='does not match the DukeMTMC-reID'):
        train.main(base_args(fresh, csv_path, image_root, 4, *val_args(query, gallery, 2)[:4],
                             '--val_excluder', 'duke'))
    assert not os.path.exists(fresh)


def test_validation_with_the_folders_excluder_takes_its_camera_regex(tmp_path):
    from triplet_reid.inputs.images import Preprocessing
    from triplet_reid.training import validation
    from conftest import write_image
    # The query (A, camera 1) is nearest to A's other camera-1 image, then to
    # B, then to A from camera 2: with cameras the first match is ignored.
    brightness = {'A/q_c1.png': 100, 'A/g_c1.png': 105, 'B/g_c2.png': 115, 'A/g_c2.png': 130}
    for name, value in brightness.items():
        write_image(str(tmp_path / name), np.full((8, 4, 3), value, np.uint8))
    query, gallery = tmp_path / 'q.csv', tmp_path / 'g.csv'
    query.write_text('A,A/q_c1.png\n')
    gallery.write_text(''.join('{},{}\n'.format(n[0], n) for n in list(brightness)[1:]))
    preprocessing = Preprocessing((8, 4))

    def make(excluder, camera_regex):
        return validation.make_validation(str(query), str(gallery), str(tmp_path), excluder,
                                          preprocessing, camera_regex=camera_regex,
                                          loading_threads=1, max_pixels=1000)

    def forward(images):
        return tf.reduce_mean(images, axis=[1, 2, 3])[:, None]
    assert make('folders', r'_c(\d)')(forward)['mAP'] == pytest.approx(0.5)
    assert make('folders', None)(forward)['mAP'] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(cli.UserError, match='--val_camera_regex is for `--val_excluder '
                       'folders`'):
        make('market1501', r'_c(\d)')


@pytest.mark.parametrize('content', ['{"mAP": "0.5", "step": 3}', '{"mAP": null}', '{}',
                                     '{"mAP": 2.5}', '{"mAP": true}', '{"mAP": NaN}'])
def test_a_damaged_best_json_is_refused_by_name(tmp_path, content):
    from triplet_reid import experiment
    (tmp_path / 'best.json').write_text(content)
    with pytest.raises(cli.UserError, match=r'best.json` is corrupt .*delete it to start'):
        experiment.read_best(str(tmp_path))
