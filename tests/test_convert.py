"""Dataset converters on fake folder trees with the real naming, and the
excluders of the datasets they convert."""

import csv
import os

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from triplet_reid import cli
from triplet_reid import common
from conftest import ROOT, touch, write_cuhk03
from triplet_reid.data import convert
from triplet_reid.excluders import cuhk03, cuhk03_folders, msmt17, veri776
from triplet_reid.excluders import folders as excluders_folders

REFERENCE = os.path.join(os.path.dirname(ROOT), 'shared', 'reference')


def read_rows(path):
    with open(path) as f:
        return [tuple(row) for row in csv.reader(f)]


def run(*argv):
    assert convert.main(list(argv)) == 0


@pytest.mark.parametrize('dataset, prefix, folder', [('market1501', 'market1501', 'market1501'),
                                                     ('duke', 'dukeMTMC', 'duke')])
def test_reproduces_the_original_csvs(tmp_path, dataset, prefix, folder):
    """Row for row, in the same order, from a tree of empty files."""
    reference = os.path.join(REFERENCE, folder)
    if not os.path.isdir(reference):
        pytest.skip('../shared/reference is not available')
    expected = {split: read_rows(os.path.join(reference, '{}_{}.csv'.format(prefix, split)))
                for split in ('train', 'test', 'query')}
    root = tmp_path / 'extracted'
    for rows in expected.values():
        touch(root, [path for _, path in rows])
    touch(root, ['bounding_box_test/Thumbs.db', 'readme.txt'])
    run(dataset, '--dataset_root', str(root), '--output_dir', str(tmp_path / 'out'))
    for split, rows in expected.items():
        assert read_rows(tmp_path / 'out' / '{}_{}.csv'.format(prefix, split)) == rows


def test_market1501_small_tree(tmp_path, capsys):
    names = {'bounding_box_train': ['0002_c1s1_000451_03.jpg', '0002_c2s1_000551_01.jpg'],
             'bounding_box_test': ['0001_c3s1_000551_01.jpg', '-1_c1s1_000401_03.jpg',
                                   '0000_c1s1_000001_00.jpg', 'Thumbs.db'],
             'query': ['0001_c1s1_001051_00.jpg']}
    touch(tmp_path / 'm', [folder + '/' + name for folder, files in names.items()
                           for name in files])
    run('market1501', '--dataset_root', str(tmp_path / 'm'), '--output_dir', str(tmp_path))
    assert read_rows(tmp_path / 'market1501_test.csv') == [
        ('-1', 'bounding_box_test/-1_c1s1_000401_03.jpg'),
        ('0000', 'bounding_box_test/0000_c1s1_000001_00.jpg'),
        ('0001', 'bounding_box_test/0001_c3s1_000551_01.jpg')]
    assert read_rows(tmp_path / 'market1501_query.csv') == [
        ('0001', 'query/0001_c1s1_001051_00.jpg')]
    assert len(read_rows(tmp_path / 'market1501_train.csv')) == 2
    assert '--excluder market1501' in capsys.readouterr().out


def test_bad_trees_write_nothing(tmp_path):
    out = tmp_path / 'out'
    # The parent of the extracted folder: say which folder is expected.
    touch(tmp_path / 'parent' / 'Market-1501-v15.09.15', ['query/0001_c1s1_001051_00.jpg'])
    with pytest.raises(convert.ConversionError, match='has no folder `bounding_box_train`'):
        run('market1501', '--dataset_root', str(tmp_path / 'parent'), '--output_dir', str(out))
    # Only the last split is wrong: no CSV may appear.
    touch(tmp_path / 'm', ['bounding_box_train/0002_c1s1_000451_03.jpg',
                           'bounding_box_test/0001_c3s1_000551_01.jpg',
                           'query/0001_c1s1_001051_00.jpg', 'query/holiday.jpg'])
    with pytest.raises(convert.ConversionError, match='holiday.jpg` does not follow'):
        run('market1501', '--dataset_root', str(tmp_path / 'm'), '--output_dir', str(out))
    assert not out.exists() or os.listdir(out) == []
    with pytest.raises(convert.ConversionError, match='follow the DukeMTMC-reID naming'):
        run('duke', '--dataset_root', str(tmp_path / 'm'), '--output_dir', str(out))


def test_msmt17(tmp_path):
    root = tmp_path / 'MSMT17_V2'
    lists = {
        'list_train': ['0000/0000_000_01_0303morning_0015_0.jpg 0',
                       '0001/0001_004_05_0303morning_0040_1.jpg 1'],
        'list_val': ['0000/0000_001_02_0303morning_0020_0.jpg 0'],
        'list_query': ['0000/0000_010_03_0303afternoon_0101_0.jpg 0'],
        'list_gallery': ['0000/0000_011_07_0303afternoon_0111_1.jpg 0',
                         '0002/0002_012_03_0304noon_0007_0.jpg 2']}
    for name, lines in lists.items():
        folder = 'mask_train_v2' if name in ('list_train', 'list_val') else 'mask_test_v2'
        touch(root, [folder + '/' + line.split()[0] for line in lines])
        (root / (name + '.txt')).write_text('\n'.join(lines) + '\n')
    run('msmt17', '--dataset_root', str(root), '--output_dir', str(tmp_path))
    assert read_rows(tmp_path / 'msmt17_train.csv') == [
        ('0000', 'mask_train_v2/0000/0000_000_01_0303morning_0015_0.jpg'),
        ('0001', 'mask_train_v2/0001/0001_004_05_0303morning_0040_1.jpg'),
        ('0000', 'mask_train_v2/0000/0000_001_02_0303morning_0020_0.jpg')]
    assert [pid for pid, _ in read_rows(tmp_path / 'msmt17_test.csv')] == ['0000', '0002']
    os.remove(root / 'mask_test_v2/0002/0002_012_03_0304noon_0007_0.jpg')
    with pytest.raises(convert.ConversionError, match=r'list_gallery.txt:2: the image .* missing'):
        run('msmt17', '--dataset_root', str(root), '--output_dir', str(tmp_path))
    # An empty list file is an empty split: an error, and no CSV is written.
    (root / 'list_gallery.txt').write_text('\n')
    out = tmp_path / 'empty'
    with pytest.raises(convert.ConversionError, match='the test split of .* is empty'):
        run('msmt17', '--dataset_root', str(root), '--output_dir', str(out))
    assert not out.exists() or not os.listdir(out)
    (root / 'list_gallery.txt').write_bytes(b'\xff\xfe\x00garbage')
    with pytest.raises(convert.ConversionError, match='cannot read the MSMT17 list file'):
        run('msmt17', '--dataset_root', str(root), '--output_dir', str(out))


def test_veri776(tmp_path):
    touch(tmp_path / 'VeRi', ['image_train/0001_c001_00016450_0.jpg',
                              'image_query/0002_c002_00030600_0.jpg',
                              'image_test/0002_c003_00084310_0.jpg',
                              'image_test/0002_c002_00030605_1.jpg'])
    run('veri776', '--dataset_root', str(tmp_path / 'VeRi'), '--output_dir', str(tmp_path))
    gallery = read_rows(tmp_path / 'veri776_test.csv')
    assert gallery == [('0002', 'image_test/0002_c002_00030605_1.jpg'),
                       ('0002', 'image_test/0002_c003_00084310_0.jpg')]
    mask = veri776.excluder(['image_query/0002_c002_00030600_0.jpg'],
                            [path for _, path in gallery])(np.arange(1))
    np.testing.assert_array_equal(mask, [[True, False]])


def test_cuhk03_new_protocol(tmp_path):
    root = tmp_path / 'cuhk03'
    images = write_cuhk03(root, np.random.default_rng(0))
    # A folder of the user's with the name of a temporary one is left alone.
    (root / 'images_detected.partial').mkdir()
    (root / 'images_detected.partial' / 'mine.txt').write_text('keep')
    run('cuhk03', '--dataset_root', str(root), '--output_dir', str(tmp_path))
    assert (root / 'images_detected.partial' / 'mine.txt').read_text() == 'keep'
    assert sorted(name for name in os.listdir(root) if name.startswith('images_')) == [
        'images_detected', 'images_detected.partial', 'images_labeled']
    for (image_type, name), image in images.items():
        np.testing.assert_array_equal(
            np.asarray(Image.open(root / ('images_' + image_type) / name)), image)
    # MATLAB's empty cells (a person with fewer than ten images) are skipped.
    assert not (root / 'images_detected' / '1_001_1_05.png').exists()
    assert len(os.listdir(root / 'images_labeled')) == len(images) // 2
    train = read_rows(tmp_path / 'cuhk03_detected_train.csv')
    assert {pid for pid, _ in train} == {'0001', '0002'}
    assert ('0001', 'images_detected/1_001_1_01.png') in train
    query = read_rows(tmp_path / 'cuhk03_labeled_query.csv')
    gallery = read_rows(tmp_path / 'cuhk03_labeled_test.csv')
    assert {pid for pid, _ in query} <= {pid for pid, _ in gallery}
    assert not {path for _, path in query} & {path for _, path in gallery}
    # The excluder ignores the same person in the same view, nothing else.
    q, g = [path for _, path in query], [path for _, path in gallery]
    mask = cuhk03.excluder(q, g)(np.arange(len(q)))
    expected = [[a.split('/')[1][:7] == b.split('/')[1][:7] for b in g] for a in q]
    np.testing.assert_array_equal(mask, expected)
    assert mask.any() and not mask.all()


def test_cuhk03_protocol_naming_unknown_images(tmp_path):
    root = tmp_path / 'cuhk03'
    write_cuhk03(root, np.random.default_rng(0))
    savemat(root / 'cuhk03_new_protocol_config_labeled.mat', {
        'filelist': np.array(['9_001_1_01.png'], dtype=object)[:, None],
        'labels': [[1.0]], 'camId': [[1.0]], 'train_idx': [[1.0]], 'query_idx': [[1.0]],
        'gallery_idx': [[1.0]]})
    with pytest.raises(convert.ConversionError, match='1 images that cuhk-03.mat does not'):
        run('cuhk03', '--dataset_root', str(root), '--output_dir', str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()


def test_a_cuhk03_image_claiming_gigabytes_is_refused_before_reading(tmp_path):
    # One cell of cuhk-03.mat replaced by an image of fill values that claims
    # 6 GB in a file of kilobytes: refused by name, nothing extracted.
    root = tmp_path / 'cuhk03'
    write_cuhk03(root, np.random.default_rng(0))
    with h5py.File(root / 'cuhk03_release' / 'cuhk-03.mat', 'r+') as f:
        bomb = f['#refs#'].create_dataset('bomb', shape=(3, 40000, 50000), dtype='u1',
                                          chunks=(3, 1000, 1000))
        campus = f[f['detected'][0, 0]]
        cells = campus[()]
        cells[1, 1] = bomb.ref
        campus[...] = cells
    with pytest.raises(cli.UserError, match=r'the `#refs#/bomb` dataset of `.*cuhk-03\.mat` '
                                            r'claims 6000000000 values'):
        run('cuhk03', '--dataset_root', str(root), '--output_dir', str(tmp_path / 'out'))
    assert not (root / 'images_detected').exists() and not (tmp_path / 'out').exists()


def test_msmt17_excluder():
    query = ['test/0003/0003_010_03_0303afternoon_0101_0.jpg']
    gallery = ['test/0003/0003_011_03_0303afternoon_0111_1.jpg',
               'test/0003/0003_012_04_0303afternoon_0112_1.jpg',
               'test/0004/0004_013_03_0303afternoon_0113_1.jpg']
    np.testing.assert_array_equal(msmt17.excluder(query, gallery)(np.arange(1)),
                                  [[True, False, False]])


def test_unusable_output_folders_are_refused_before_reading(tmp_path):
    root = tmp_path / 'Market'
    touch(root, ['bounding_box_train/0001_c1s1_000001_00.jpg',
                 'bounding_box_test/0001_c2s1_000001_00.jpg', 'query/0001_c3s1_000001_00.jpg'])
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    with pytest.raises(convert.ConversionError, match='is a file, not a folder'):
        run('market1501', '--dataset_root', str(root), '--output_dir', str(a_file))
    with pytest.raises(convert.ConversionError, match='is not a writeable folder'):
        run('market1501', '--dataset_root', str(root), '--output_dir', str(a_file / 'sub'))
    run('market1501', '--dataset_root', str(root), '--output_dir', str(tmp_path / 'new' / 'dir'))
    assert len(os.listdir(tmp_path / 'new' / 'dir')) == 3


def test_folders_of_identities(tmp_path, capsys):
    root = tmp_path / 'crops'
    # Eight identities, each seen by cameras 1 and 2 (three images), one by camera 3 only.
    names = []
    for i in range(8):
        names += ['p{}/img_c1_{}.jpg'.format(i, j) for j in range(2)]
        names += ['p{}/img_c2_0.jpg'.format(i)]
    names += ['lonely/img_c3_0.jpg', 'p0/readme.txt']
    touch(root, names)
    out = tmp_path / 'out'
    run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--seed', '1')
    printed = capsys.readouterr().out
    assert 'with --excluder diagonal' in printed
    train, query, test = (read_rows(out / 'crops_{}.csv'.format(s))
                          for s in ('train', 'query', 'test'))
    ids = {split: {pid for pid, _ in rows} for split, rows in
           (('train', train), ('query', query), ('test', test))}
    assert len(ids['train']) == 4 and not ids['train'] & ids['test']
    assert ids['query'] <= ids['test'] and len(ids['train'] | ids['test']) == 9
    # Without cameras: one query per test identity that has another image.
    assert sorted(pid for pid, _ in query) == sorted(ids['test'] - {'lonely'})
    assert all(path.startswith(pid + '/') and path.endswith('.jpg')
               for pid, path in train + query + test)
    assert not set(query) & set(test)
    # The same seed gives the same split; another seed another one.
    run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--seed', '1')
    assert read_rows(out / 'crops_query.csv') == query
    # With cameras: a query per camera while each query keeps a match in
    # another camera; seen twice by camera 1 and once by camera 2, an identity
    # has one query (a second would take the first one's only match).
    run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--seed', '1',
        '--camera_regex', r'_c(\d+)_', '--prefix', 'cams')
    assert r"--excluder folders --camera_regex '_c(\d+)_'" in capsys.readouterr().out
    query = read_rows(out / 'cams_query.csv')
    test = read_rows(out / 'cams_test.csv')
    assert sorted(pid for pid, _ in query) == sorted(ids['test'] - {'lonely'})
    excluder = excluders_folders.excluder([f for _, f in query], [f for _, f in test],
                                          camera_regex=r'_c(\d+)_')
    mask = excluder(np.arange(len(query)))
    for (qpid, qf), row in zip(query, mask):
        for (gpid, gf), excluded in zip(test, row):
            assert excluded == (qpid == gpid and qf.split('_c')[1][0] == gf.split('_c')[1][0])
        assert any(gpid == qpid and not excluded for (gpid, _), excluded in zip(test, row))
    with pytest.raises(convert.ConversionError, match='does not match --camera_regex'):
        run('folders', '--dataset_root', str(root), '--output_dir', str(out),
            '--camera_regex', r'_cam(\d+)')
    with pytest.raises(convert.ConversionError, match='leaves no test identities'):
        run('folders', '--dataset_root', str(root), '--output_dir', str(out),
            '--train_fraction', '0.99')
    for bad in ('1', '0', 'nan', 'half'):
        with pytest.raises(SystemExit):
            run('folders', '--dataset_root', str(root), '--output_dir', str(out),
                '--train_fraction', bad)
    with pytest.raises(SystemExit):
        run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--seed', '-1')
    with pytest.raises(convert.ConversionError, match='at least two'):
        run('folders', '--dataset_root', str(root / 'p1'), '--output_dir', str(out))


def test_folders_identity_seen_once_by_each_camera_gets_one_query(tmp_path):
    """Two queries would leave neither a match in the gallery."""
    root = tmp_path / 'crops'
    touch(root, ['a/x_c1_0.jpg', 'a/x_c2_0.jpg', 'b/x_c1_0.jpg', 'b/x_c2_0.jpg', 'b/x_c2_1.jpg'])
    out = tmp_path / 'out'
    run('folders', '--dataset_root', str(root), '--output_dir', str(out),
        '--train_fraction', '0.5', '--camera_regex', r'_c(\d+)_')
    query, test = (read_rows(out / 'crops_{}.csv'.format(s)) for s in ('query', 'test'))
    for pid, path in query:
        camera = path.split('_c')[1][0]
        assert any(g == pid and f.split('_c')[1][0] != camera for g, f in test), path


def cuhk03_folders_tree(root, train_ids=3, val_counts=((5, 5), (1, 1), (3, 0), (2, 4))):
    """train/ of `train_ids` identities with ten images; val/ identities with
    (first camera, second camera) image counts."""
    names = ['train/{:04d}_{:02d}.jpg'.format(i, k) for i in range(train_ids) for k in range(10)]
    for i, (first, second) in enumerate(val_counts):
        names += ['val/{:04d}_{:02d}.jpg'.format(i, k) for k in range(first)]
        names += ['val/{:04d}_{:02d}.jpg'.format(i, 5 + k) for k in range(second)]
    touch(root, names + ['train_resized/0000_00.jpg', 'val/Thumbs.db'])


def test_cuhk03_folders(tmp_path, capsys):
    root = tmp_path / 'detected'
    cuhk03_folders_tree(root)
    run('cuhk03_folders', '--dataset_root', str(root), '--output_dir', str(tmp_path / 'out'))
    assert '--excluder cuhk03_folders' in capsys.readouterr().out
    train, query, test = (read_rows(tmp_path / 'out' / 'cuhk03_folders_{}.csv'.format(s))
                          for s in ('train', 'query', 'test'))
    assert len(train) == 30 and train[0] == ('0000', 'train/0000_00.jpg')
    # The first image of each camera, while the other camera keeps one in the gallery;
    # an identity seen by one camera only is a distractor.
    assert query == [('0000', 'val/0000_00.jpg'), ('0000', 'val/0000_05.jpg'),
                     ('0001', 'val/0001_00.jpg'), ('0003', 'val/0003_00.jpg'),
                     ('0003', 'val/0003_05.jpg')]
    assert len(test) == 10 + 2 + 3 + 6 - len(query)
    assert not set(query) & set(test)
    mask = cuhk03_folders.excluder([f for _, f in query], [f for _, f in test])(
        np.arange(len(query)))
    for (qpid, qf), row in zip(query, mask):
        for (gpid, gf), excluded in zip(test, row):
            same_camera = int(qf[-6:-4]) // 5 == int(gf[-6:-4]) // 5
            assert excluded == (qpid == gpid and same_camera)
        # Every query keeps a true match.
        assert any(g == qpid and not e for (g, _), e in zip(test, row))


def test_cuhk03_folders_bad_trees(tmp_path):
    root = tmp_path / 'detected'
    cuhk03_folders_tree(root)
    out = tmp_path / 'out'
    touch(root, ['val/0009_1.jpg'])
    with pytest.raises(convert.ConversionError, match=r'val/0009_1.jpg.*does not follow'):
        run('cuhk03_folders', '--dataset_root', str(root), '--output_dir', str(out))
    os.remove(root / 'val' / '0009_1.jpg')
    os.rename(root / 'val', root / 'validation')
    with pytest.raises(convert.ConversionError, match='has no folder `val`'):
        run('cuhk03_folders', '--dataset_root', str(root), '--output_dir', str(out))
    assert not out.exists()
    with pytest.raises(Exception, match='does not match the CUHK03 folders .IIII_KK.jpg. pattern'):
        cuhk03_folders.excluder(['val/0001_00.jpg'], ['0001_c1s1_000001_00.jpg'])


def test_folders_with_commas_and_quotes_read_back_and_line_breaks_are_refused(tmp_path):
    root = tmp_path / 'crops'
    names = ['Smith, J/a,1.jpg', 'Smith, J/b.jpg', 'say "hi"/c.jpg', 'say "hi"/d.jpg',
             'p3/e.jpg', 'p3/f.jpg', 'p4/g.jpg', 'p4/h.jpg']
    touch(root, names)
    out = tmp_path / 'out'
    run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--prefix', 'x')
    rows = []
    for split in ('train', 'query', 'test'):
        pids, fids = common.load_dataset(str(out / 'x_{}.csv'.format(split)), str(root))
        rows += zip(pids, fids)
    assert sorted(rows) == sorted((name.split('/')[0], name) for name in names)
    for bad in ('new\nline/i.jpg', ' p5/j.jpg'):
        touch(root, [bad])
        with pytest.raises(convert.ConversionError, match='line break or begins or ends with '
                                                          'white space.*Nothing was written'):
            run('folders', '--dataset_root', str(root), '--output_dir', str(tmp_path / 'bad'))
        os.remove(root / bad)
    assert not os.path.exists(tmp_path / 'bad')


def test_val_ids_hold_out_training_identities_as_a_validation_set(tmp_path, capsys):
    from triplet_reid.excluders import market1501
    # Ten training identities, each seen by cameras 1 (twice) and 2; one only by camera 3.
    train = ['{:04d}_c{}s1_{:06d}_00.jpg'.format(i, c, j) for i in range(2, 12)
             for j, c in enumerate((1, 1, 2))] + ['0099_c3s1_000000_00.jpg']
    names = {'bounding_box_train': train, 'bounding_box_test': ['0001_c3s1_000551_01.jpg'],
             'query': ['0001_c1s1_001051_00.jpg']}
    touch(tmp_path / 'm', [folder + '/' + name for folder, files in names.items()
                           for name in files])
    run('market1501', '--dataset_root', str(tmp_path / 'm'), '--output_dir', str(tmp_path),
        '--val_ids', '4', '--val_seed', '3')
    assert '--val_excluder market1501' in capsys.readouterr().out
    rows = {split: read_rows(tmp_path / 'market1501_{}.csv'.format(split))
            for split in ('train', 'val_query', 'val_test')}
    ids = {split: {pid for pid, _ in r} for split, r in rows.items()}
    assert len(ids['train']) == 7 and not ids['train'] & ids['val_test']
    assert ids['val_query'] <= ids['val_test'] and len(ids['val_test']) == 4
    assert len(rows['train']) + len(rows['val_query']) + len(rows['val_test']) == len(train)
    # Every query has a match in the gallery that the Market-1501 excluder keeps.
    query = [f.split('/')[1] for _, f in rows['val_query']]
    gallery = [f.split('/')[1] for _, f in rows['val_test']]
    kept = ~market1501.excluder(query, gallery)(np.arange(len(query)))
    same = np.array([[q[:4] == g[:4] for g in gallery] for q in query])
    assert (kept & same).any(axis=1).all()
    # The same seed holds out the same identities; too many are refused.
    run('market1501', '--dataset_root', str(tmp_path / 'm'), '--output_dir', str(tmp_path),
        '--val_ids', '4', '--val_seed', '3')
    assert read_rows(tmp_path / 'market1501_val_test.csv') == rows['val_test']
    with pytest.raises(convert.ConversionError, match='--val_ids 11 leaves no training'):
        run('market1501', '--dataset_root', str(tmp_path / 'm'), '--output_dir',
            str(tmp_path / 'x'), '--val_ids', '11')
    assert not os.path.exists(tmp_path / 'x')


def test_the_prefix_is_a_name_and_the_csvs_replace_only_earlier_csvs(tmp_path, capsys):
    root = tmp_path / 'crops'
    touch(root, ['p{}/{}.jpg'.format(p, i) for p in range(4) for i in range(2)])
    out = tmp_path / 'out'
    out.mkdir()
    for prefix in ('../escape', 'a/b', '..', ''):
        with pytest.raises(SystemExit):
            convert.main(['folders', '--dataset_root', str(root), '--output_dir', str(out),
                          '--prefix', prefix])
        assert 'is not a file name prefix' in capsys.readouterr().err
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ['crops', 'out']
    (out / 'x_test.csv').write_bytes(b'\x89PNG\r\n\x1a\n an image')
    with pytest.raises(cli.UserError, match='x_test.csv` exists and is not a CSV file'):
        convert.main(['folders', '--dataset_root', str(root), '--output_dir', str(out),
                      '--prefix', 'x'])
    assert sorted(os.listdir(out)) == ['x_test.csv']
    (out / 'x_test.csv').write_text('0,p0/0.jpg\n')
    run('folders', '--dataset_root', str(root), '--output_dir', str(out), '--prefix', 'x')
    assert sorted(os.listdir(out)) == ['x_query.csv', 'x_test.csv', 'x_train.csv']
