"""search.py: the query's own image ranks first, the outputs' layouts, the errors."""

import csv
import json
import os

import h5py
import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid.storage import files
from triplet_reid import embed
from triplet_reid.serving import gallery
from triplet_reid.evaluation import metrics
from triplet_reid.inputs import images
from triplet_reid import search
from triplet_reid import train
from conftest import base_args, make_dataset
from triplet_reid.serving.gallery import rank


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



@pytest.mark.parametrize('metric', ['euclidean', 'sqeuclidean', 'cityblock', 'cosine'])
def test_the_index_finds_the_exact_top_k_of_a_clustered_gallery(metric, tmp_path):
    # 400 identities of 10 images each around random directions, and queries
    # near ten of them: every metric's index finds (almost all of) the exact
    # top-10, with the exact distances.
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(400, 32)).astype(np.float32)
    embs = np.repeat(centers, 10, axis=0) + rng.normal(0, 0.3, (4000, 32)).astype(np.float32)
    queries = centers[:10] + rng.normal(0, 0.3, (10, 32)).astype(np.float32)
    path = str(tmp_path / 'g.h5')
    index = gallery.load_or_build_index(embs, metric, path)
    nearest, distances = gallery.search_index(index, queries, embs, metric, 10, 64)
    exact, exact_distances, _ = rank(queries, embs, metric, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(nearest, exact)]) >= 9.5
    expected = metrics.pairwise_distances(queries, embs, metric)
    np.testing.assert_allclose(distances, np.take_along_axis(expected, nearest, 1), rtol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()
    assert os.path.exists(gallery.index_path(path, metric))


def test_the_saved_index_is_reused_rebuilt_for_other_embeddings_and_survives_damage(
        tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    embs = rng.normal(size=(300, 8)).astype(np.float32)
    path = str(tmp_path / 'g.h5')
    built = []
    real_build = gallery.build_index
    monkeypatch.setattr(gallery, 'build_index', lambda *a: built.append(1) or real_build(*a))
    gallery.load_or_build_index(embs, 'euclidean', path)
    gallery.load_or_build_index(embs, 'sqeuclidean', path)
    assert len(built) == 1, 'euclidean and sqeuclidean share the l2 index'
    assert os.listdir(tmp_path) == ['g.h5.l2.index']
    gallery.load_or_build_index(embs[::-1].copy(), 'euclidean', path)
    assert len(built) == 2 and 'built from other embeddings' in capsys.readouterr().err
    files.atomic_write(gallery.index_path(path, 'euclidean'), b'\x89HDF garbage', 'wb')
    index = gallery.load_or_build_index(embs, 'euclidean', path)
    assert len(built) == 3 and 'is damaged' in capsys.readouterr().err
    assert index.ntotal == 300
    # A folder that cannot be written: the search goes on with the built index.
    def refused(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')
    with monkeypatch.context() as patch:
        patch.setattr(files, 'temporary_beside', refused)
        assert gallery.load_or_build_index(embs[:50].copy(), 'cosine', path).ntotal == 50
    assert 'cannot save the gallery index' in capsys.readouterr().err
    os.chmod(tmp_path, 0o500)
    try:
        if os.access(str(tmp_path), os.W_OK):
            pytest.skip('running as a user who can write anywhere')
        assert gallery.load_or_build_index(embs[:100].copy(), 'cosine', path).ntotal == 100
        assert 'cannot save the gallery index' in capsys.readouterr().err
    finally:
        os.chmod(tmp_path, 0o700)


def test_search_with_the_index_finds_what_the_exhaustive_search_finds(embedded_gallery,
                                                                      tmp_path):
    root, h5, folder = embedded_gallery
    outputs = []
    for extra in ([], ['--index'], ['--index', '--index_candidates', '1'],
                  ['--index', '--index_candidates', str(2 ** 63 - 1)]):
        out = str(tmp_path / 'results{}.json'.format(len(outputs)))
        assert search.main(['--experiment_root', root, '--gallery', h5, '--query', folder,
                            '--top_k', '5', '--output', out] + extra) == 0
        outputs.append(json.load(open(out)))
    for output in outputs[1:]:
        for entry, expected in zip(output, outputs[0]):
            assert [r['file'] for r in entry['results']] == [
                r['file'] for r in expected['results']]
            np.testing.assert_allclose([r['distance'] for r in entry['results']],
                                       [r['distance'] for r in expected['results']], atol=1e-3)
    assert os.path.exists(h5 + '.l2.index')
    with pytest.raises(cli.UserError, match='leave out one of --index and --rerank'):
        search.main(['--experiment_root', root, '--gallery', h5, '--query', folder, '--index',
                     '--rerank'])

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
    with pytest.raises(cli.UserError, match='holds no file names'):
        search.main(base + ['--gallery', old])
    wrong = str(tmp_path / 'wrong.h5')
    with h5py.File(wrong, 'w') as f:
        f['emb'] = np.zeros((2, 5), np.float32)
        f['fids'] = np.array(['a.jpg', 'b.jpg'], dtype=object).astype('S')
    with pytest.raises(cli.UserError, match='embeds into 16 dimensions but the gallery'):
        search.main(base + ['--gallery', wrong])
    odd = str(tmp_path / 'odd.h5')
    with h5py.File(odd, 'w') as f:
        f['emb'] = np.zeros((2, 16), np.float32)
        f['fids'] = np.array(['a.jpg', 'b.jpg'], dtype=object).astype('S')
        f['augmentation_types'] = np.array([b'original_rotate'])
    with pytest.raises(cli.UserError, match='augmentations that embed.py does not make'):
        search.main(base + ['--gallery', odd])
    with pytest.raises(cli.UserError, match='must end in .json or .csv'):
        search.main(base + ['--gallery', h5, '--output', str(tmp_path / 'r.txt')])
    with pytest.raises(cli.UserError, match='neither an image file nor a folder'):
        search.main(['--experiment_root', root, '--gallery', h5, '--query',
                     str(tmp_path / 'missing.jpg')])
    # A gallery embedded from a CSV holds paths relative to its image root.
    relative = str(tmp_path / 'relative.h5')
    with h5py.File(relative, 'w') as f:
        f['emb'] = np.zeros((2, 16), np.float32)
        f['fids'] = np.array(['train/a.jpg', 'train/b.jpg'], dtype=object).astype('S')
    with pytest.raises(cli.UserError, match=r'cannot read the image `train/a.jpg` for the '
                       r'plot: .*run search.py from the folder they are '
                       r'relative to, or embed the gallery with --images'):
        search.main(base + ['--gallery', relative, '--plot', str(tmp_path / 'p.png')])


def test_outputs_never_replace_the_experiment_the_gallery_or_a_query(embedded_gallery,
                                                                     tmp_path):
    root, h5, folder = embedded_gallery
    query = os.path.join(folder, sorted(os.listdir(folder))[0])
    base = ['--experiment_root', root, '--gallery', h5, '--query', query]
    before = {name: os.path.getmtime(os.path.join(root, name)) for name in os.listdir(root)}
    image = open(query, 'rb').read()
    for flag, target, message in (
            ('--output', os.path.join(root, 'args.json'), 'one of the files that train.py keeps'),
            ('--output', os.path.join(root, 'checkpoint-5.csv'), 'one of the files'),
            ('--plot', h5, 'is the same file as --gallery'),
            ('--plot', query, 'is the same file as --query'),
            ('--plot', os.path.join(root, 'checkpoint'), 'one of the files that train.py keeps'),
            ('--plot', '/dev/full', 'not a regular file')):
        with pytest.raises(cli.UserError, match=message):
            search.main(base + [flag, target])
    link = tmp_path / 'dangling.json'
    link.symlink_to(tmp_path / 'nowhere' / 'x.json')
    with pytest.raises(cli.UserError, match='a link to .*which does not exist'):
        search.main(base + ['--output', str(link)])
    assert {name: os.path.getmtime(os.path.join(root, name)) for name in os.listdir(root)} == \
        before
    assert open(query, 'rb').read() == image


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


def test_the_search_report_loads_in_a_browser(embedded_gallery, tmp_path):
    from conftest import browse
    root, h5, folder = embedded_gallery
    queries = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:3]]
    assert search.main(['--experiment_root', root, '--gallery', h5, '--query'] + queries +
                       ['--top_k', '4', '--threshold', '0.001', '--html',
                        str(tmp_path / 'report')]) == 0
    shown, log = browse(tmp_path / 'report' / 'index.html', tmp_path)
    assert shown['title'] == 'Search' and shown['queries'] == 3
    assert shown['images'] == 3 * (1 + 4)
    assert shown['broken'] == 0 and shown['external'] == 0 and shown['scripts'] == 0
    # Each query finds itself within the threshold, then the line, then the rest.
    assert shown['thresholds'] == 3
    assert 'Uncaught' not in log and 'Not allowed to load' not in log
