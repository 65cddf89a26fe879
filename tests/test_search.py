"""search.py: the query's own image ranks first, the outputs' layouts, the errors."""

import csv
import json
import os

import h5py
import numpy as np
import pytest

import common
import embed
import gallery
import metrics
import images
import search
import train
from conftest import base_args, make_dataset
from gallery import rank


@pytest.fixture(scope='module')
def embedded_gallery(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('search')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=3)
    root = str(tmp / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 5)) == 0
    folder = os.path.join(image_root, 'train')
    assert embed.main(['--experiment_root', root, '--images', folder, '--quiet']) == 0
    return root, os.path.join(root, 'images_embeddings.h5'), folder


def test_each_query_finds_itself_first(embedded_gallery, tmp_path, capsys):
    root, h5, folder = embedded_gallery
    queries = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:2]]
    out = str(tmp_path / 'results.json')
    assert search.main(['--experiment_root', root, '--gallery', h5, '--query'] + queries +
                       ['--top_k', '3', '--output', out, '--threshold', '0.001',
                        '--plot', str(tmp_path / 'results.png')]) == 0
    results = json.load(open(out))
    assert [entry['query'] for entry in results] == queries
    for query, entry in zip(queries, results):
        assert len(entry['results']) == 3
        first = entry['results'][0]
        assert first['file'] == query and first['distance'] < 1e-3 and first['match']
        assert not any(r['match'] for r in entry['results'][1:])
        distances = [r['distance'] for r in entry['results']]
        assert distances == sorted(distances)
    printed = capsys.readouterr().out
    assert printed.count('\n') == 2 * (1 + 3) and queries[0] in printed
    assert os.path.getsize(tmp_path / 'results.png') > 1000
    # The same as CSV: one row per query and rank.
    out_csv = str(tmp_path / 'results.csv')
    assert search.main(['--experiment_root', root, '--gallery', h5, '--query', folder,
                        '--top_k', '2', '--output', out_csv]) == 0
    rows = list(csv.reader(open(out_csv)))
    assert rows[0] == ['query', 'rank', 'file', 'distance']
    assert len(rows) == 1 + 12 * 2 and rows[1][1] == '1' and rows[2][1] == '2'
    assert all(row[0] == row[2] for row in rows[1::2])


def test_queries_are_embedded_with_the_gallery_s_test_time_augmentation(embedded_gallery, tmp_path):
    root, _, folder = embedded_gallery
    h5 = str(tmp_path / 'augmented.h5')
    assert embed.main(['--experiment_root', root, '--images', folder, '--quiet',
                       '--flip_augment', '--crop_augment', 'five', '--aggregator',
                       'normalized_mean', '--filename', h5]) == 0
    with h5py.File(h5, 'r') as f:
        assert f.attrs['aggregator'] == 'normalized_mean'
    query = os.path.join(folder, sorted(os.listdir(folder))[5])
    out = str(tmp_path / 'results.json')
    assert search.main(['--experiment_root', root, '--gallery', h5, '--query', query,
                        '--output', out]) == 0
    first = json.load(open(out))[0]['results'][0]
    assert first['file'] == query and first['distance'] < 1e-3
    # Without the augmentation the same image lands much farther away.
    with h5py.File(h5, 'r') as augmented, h5py.File(embedded_gallery[1], 'r') as plain:
        assert np.linalg.norm(augmented['emb'][5] - plain['emb'][5]) > 1e-2


def test_test_time_augmentation_is_read_from_the_names():
    augmentation = gallery.test_time_augmentation
    for flip in (False, True):
        for crop in (None, 'center', 'five', 'avgpool'):
            names = images.augmentation_names(flip, crop)
            several = len(names) > 1
            assert augmentation(names, 'normalized_mean' if several else None) \
                == (flip, crop, 'normalized_mean' if several else None)
            # Files without the attribute: the original's aggregator.
            assert augmentation(names, None)[2] == ('mean' if several else None)
    assert augmentation(['original_rotate'], None) is None
    assert augmentation(['original_center', 'original_top_left'], None) is None


@pytest.mark.parametrize('metric', ['euclidean', 'sqeuclidean', 'cityblock', 'cosine'])
def test_rank_equals_sorting_evaluate_s_distances(metric):
    rng = np.random.default_rng(1)
    query, gallery = rng.normal(size=(7, 8)), rng.normal(size=(200, 8))
    nearest, distances, _ = rank(query, gallery, metric, 15)
    expected = metrics.metric_distances(query, gallery, metric)(np.arange(7))
    np.testing.assert_array_equal(nearest, np.argsort(expected, axis=1, kind='stable')[:, :15])
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :15])


def test_rank_with_rerank_agrees_on_the_nearest():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(30, 8)).astype(np.float32)
    query = gallery[[3, 17]] + 0.01
    nearest, distances, _ = rank(query, gallery, 'euclidean', 4)
    assert list(nearest[:, 0]) == [3, 17] and (np.diff(distances, axis=1) >= 0).all()
    reranked, _, _ = rank(query, gallery, 'euclidean', 4, rerank_them=True)
    assert list(reranked[:, 0]) == [3, 17]


def test_errors(embedded_gallery, tmp_path):
    root, h5, folder = embedded_gallery
    query = os.path.join(folder, sorted(os.listdir(folder))[0])
    base = ['--experiment_root', root, '--query', query]
    old = str(tmp_path / 'old.h5')
    with h5py.File(old, 'w') as f:
        f['emb'] = np.zeros((3, 16), np.float32)
    with pytest.raises(common.UserError, match='holds no file names'):
        search.main(base + ['--gallery', old])
    wrong = str(tmp_path / 'wrong.h5')
    with h5py.File(wrong, 'w') as f:
        f['emb'] = np.zeros((2, 5), np.float32)
        f['fids'] = np.array(['a.jpg', 'b.jpg'], dtype=object).astype('S')
    with pytest.raises(common.UserError, match='embeds into 16 dimensions but the gallery'):
        search.main(base + ['--gallery', wrong])
    odd = str(tmp_path / 'odd.h5')
    with h5py.File(odd, 'w') as f:
        f['emb'] = np.zeros((2, 16), np.float32)
        f['fids'] = np.array(['a.jpg', 'b.jpg'], dtype=object).astype('S')
        f['augmentation_types'] = np.array([b'original_rotate'])
    with pytest.raises(common.UserError, match='augmentations that embed.py does not make'):
        search.main(base + ['--gallery', odd])
    with pytest.raises(common.UserError, match='must end in .json or .csv'):
        search.main(base + ['--gallery', h5, '--output', str(tmp_path / 'r.txt')])
    with pytest.raises(common.UserError, match='neither an image file nor a folder'):
        search.main(['--experiment_root', root, '--gallery', h5, '--query',
                     str(tmp_path / 'missing.jpg')])
    # A gallery embedded from a CSV holds paths relative to its image root.
    relative = str(tmp_path / 'relative.h5')
    with h5py.File(relative, 'w') as f:
        f['emb'] = np.zeros((2, 16), np.float32)
        f['fids'] = np.array(['train/a.jpg', 'train/b.jpg'], dtype=object).astype('S')
    with pytest.raises(common.UserError, match=r'cannot read the image `train/a.jpg` for the '
                                               r'plot: .*run search.py from the folder they are '
                                               r'relative to, or embed the gallery with --images'):
        search.main(base + ['--gallery', relative, '--plot', str(tmp_path / 'p.png')])


def test_a_threshold_applies_to_the_plain_distance_also_when_re_ranked():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(30, 8)).astype(np.float32)
    query = gallery[[3, 17]] + 0.01
    nearest, distances, plain = rank(query, gallery, 'euclidean', 4, rerank_them=True)
    np.testing.assert_allclose(
        plain, np.take_along_axis(metrics.pairwise_distances(query, gallery, 'euclidean'),
                                  nearest, 1), rtol=1e-6)
    table = search.results_table(['a', 'b'], [str(i) for i in range(30)], nearest, distances,
                                 1.0, plain)
    # The re-ranked distances all lie below 1; in the plain distance only
    # the query's own image is that near.
    assert (distances < 1.0).all()
    assert [[row['match'] for row in entry['results']] for entry in table] == \
        [[True, False, False, False]] * 2


def test_a_gallery_of_another_checkpoint_is_warned_about(embedded_gallery, tmp_path, capsys):
    root, h5, folder = embedded_gallery
    other = str(tmp_path / 'other.h5')
    with h5py.File(h5, 'r') as source, h5py.File(other, 'w') as f:
        for key in source:
            source.copy(key, f)
        f.attrs.update(dict(source.attrs))
        f.attrs['checkpoint'] = 'checkpoint-1'
    query = os.path.join(folder, sorted(os.listdir(folder))[0])
    assert search.main(['--experiment_root', root, '--gallery', other, '--query', query]) == 0
    assert 'different checkpoints of `{}` (`checkpoint-1` and `checkpoint-5`)'.format(
        os.path.realpath(root)) in capsys.readouterr().err
    assert search.main(['--experiment_root', root, '--gallery', h5, '--query', query]) == 0
    assert 'WARNING' not in capsys.readouterr().err
