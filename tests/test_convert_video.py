"""The video dataset converters on fake trees with the published layouts and
split files: the tracklet CSVs they write read back as the tracklets of
the dataset's protocol."""

import json
import os

import numpy as np
import pytest
from scipy.io import savemat

from conftest import touch
from triplet_reid.data import convert_video
from triplet_reid.data.convert import ConversionError
from triplet_reid.inputs import tracklets


def convert(*argv):
    assert convert_video.main(list(argv)) == 0


def read(output, prefix, split):
    return tracklets.read_tracklets(os.path.join(output, '{}_{}.csv'.format(prefix, split)))


def make_mars(root):
    """Two training identities; a test set of identity 0003 in cameras 1 and
    2, a distractor 0000 and a junk tracklet 00-1."""
    train = ['0001C1T0001F001.jpg', '0001C1T0001F002.jpg', '0001C2T0001F001.jpg',
             '0002C1T0003F001.jpg', '0002C3T0001F001.jpg', '0002C3T0001F002.jpg']
    test = ['0003C1T0001F001.jpg', '0003C1T0001F002.jpg', '0003C2T0002F001.jpg',
            '0000C3T0001F001.jpg', '00-1C4T0001F001.jpg']
    touch(root, ['bbox_train/{}/{}'.format(n[:4], n) for n in train] +
          ['bbox_test/{}/{}'.format(n[:4], n) for n in test])
    os.makedirs(os.path.join(root, 'info'))
    for name, names in (('train_name.txt', train), ('test_name.txt', test)):
        with open(os.path.join(root, 'info', name), 'w') as f:
            f.write('\n'.join(names) + '\n')
    savemat(os.path.join(root, 'info', 'tracks_train_info.mat'), {'track_train_info': np.array(
        [[1, 2, 1, 1], [3, 3, 1, 2], [4, 4, 2, 1], [5, 6, 2, 3]], float)})
    savemat(os.path.join(root, 'info', 'tracks_test_info.mat'), {'track_test_info': np.array(
        [[1, 2, 3, 1], [3, 3, 3, 2], [4, 4, 0, 3], [5, 5, -1, 4]], float)})
    savemat(os.path.join(root, 'info', 'query_IDX.mat'), {'query_IDX': np.array([[1]], float)})


def test_mars(tmp_path):
    root, output = str(tmp_path / 'MARS'), str(tmp_path / 'out')
    make_mars(root)
    convert('mars', '--dataset_root', root, '--output_dir', output)
    train = read(output, 'mars', 'train')
    assert list(train.names) == ['0001/1/0001', '0001/2/0001', '0002/1/0003', '0002/3/0001']
    assert list(train.fids[:2]) == ['bbox_train/0001/0001C1T0001F001.jpg',
                                    'bbox_train/0001/0001C1T0001F002.jpg']
    assert list(read(output, 'mars', 'query').names) == ['0003/1/0001']
    assert list(read(output, 'mars', 'test').names) == ['0003/2/0002', '0000/3/0001',
                                                        '-1/4/0001']


def test_mars_damage_is_named(tmp_path):
    root = str(tmp_path / 'MARS')
    make_mars(root)
    savemat(os.path.join(root, 'info', 'tracks_train_info.mat'), {'track_train_info': np.array(
        [[1, 9, 1, 1]], float)})
    with pytest.raises(ConversionError, match='row 1: frames 1 to 9 are not among the 6'):
        convert('mars', '--dataset_root', root, '--output_dir', str(tmp_path / 'out'))
    open(os.path.join(root, 'info', 'query_IDX.mat'), 'wb').write(b'MATLAB garbage')
    with pytest.raises(ConversionError, match='cannot read the MARS file'):
        convert('mars', '--dataset_root', root, '--output_dir', str(tmp_path / 'out'))
    assert not os.path.exists(str(tmp_path / 'out'))


def test_ilidsvid_follows_the_published_split(tmp_path):
    root, output = str(tmp_path / 'iLIDS-VID'), str(tmp_path / 'out')
    people = ['person{:03d}'.format(i) for i in (1, 2, 4, 7)]
    touch(root, ['i-LIDS-VID/sequences/{0}/{1}/{0}_{1}_{2:05d}.png'.format(c, p, f)
                 for c in ('cam1', 'cam2') for p in people for f in (317, 318)])
    os.makedirs(os.path.join(root, 'train-test people splits'))
    # Split 1 tests people 4 and 1 (1-based indices 3 and 1), and trains on the others.
    savemat(os.path.join(root, 'train-test people splits', 'train_test_splits_ilidsvid.mat'),
            {'ls_set': np.array([[1, 2, 3, 4], [3, 1, 2, 4]], float)})
    convert('ilidsvid', '--dataset_root', root, '--output_dir', output, '--split', '1')
    assert list(read(output, 'ilidsvid', 'train').names) == [
        'person002/cam1/person002', 'person002/cam2/person002', 'person007/cam1/person007',
        'person007/cam2/person007']
    query, gallery = read(output, 'ilidsvid', 'query'), read(output, 'ilidsvid', 'test')
    assert list(query.names) == ['person001/cam1/person001', 'person004/cam1/person004']
    assert list(gallery.cameras) == ['cam2', 'cam2'] and list(query.lengths) == [2, 2]
    with pytest.raises(ConversionError, match='does not hold split 5'):
        convert('ilidsvid', '--dataset_root', root, '--output_dir', output, '--split', '5')


def test_prid2011_with_a_split_file_and_at_random(tmp_path):
    root, output = str(tmp_path / 'PRID2011'), str(tmp_path / 'out')
    both = ['person_{:04d}'.format(i) for i in range(1, 5)]
    touch(root, ['prid_2011/multi_shot/{}/{}/{:04d}.png'.format(c, p, f)
                 for c in ('cam_a', 'cam_b') for p in both for f in (1, 2, 3)] +
          ['prid_2011/multi_shot/cam_b/person_0300/0001.png'])
    splits = str(tmp_path / 'splits_prid2011.json')
    json.dump([{'train': both[:2], 'test': both[2:]}], open(splits, 'w'))
    convert('prid2011', '--dataset_root', root, '--output_dir', output, '--splits', splits)
    assert list(read(output, 'prid2011', 'query').names) == [
        'person_0003/cam_a/person_0003', 'person_0004/cam_a/person_0004']
    assert read(output, 'prid2011', 'train').fids[0] == \
        'prid_2011/multi_shot/cam_a/person_0001/0001.png'
    convert('prid2011', '--dataset_root', root, '--output_dir', str(tmp_path / 'random'))
    train = read(str(tmp_path / 'random'), 'prid2011', 'train')
    test = read(str(tmp_path / 'random'), 'prid2011', 'test')
    assert len(set(train.identities)) == 2 and not set(train.identities) & set(test.identities)
    json.dump([{'train': ['person_0300'], 'test': both}], open(splits, 'w'))
    with pytest.raises(ConversionError, match='person_0300, which is not a person of both'):
        convert('prid2011', '--dataset_root', root, '--output_dir', output, '--splits', splits)
    for hostile in ('/dev/zero', str(tmp_path)):
        with pytest.raises(ConversionError, match='splits file .* is missing'):
            convert('prid2011', '--dataset_root', root, '--output_dir', output, '--splits',
                    hostile)
    open(splits, 'w').write('[{"train": ')
    with pytest.raises(ConversionError, match='is not a splits file with split 0'):
        convert('prid2011', '--dataset_root', root, '--output_dir', output, '--splits', splits)


def test_dukev(tmp_path):
    root, output = str(tmp_path / 'DukeV'), str(tmp_path / 'out')
    touch(root, ['train/0001/0001/0001_C6_F0001_X30823.jpg',
                 'train/0001/0001/0001_C6_F0002_X30823.jpg',
                 'train/0002/0005/0002_C1_F0001_X1.jpg', 'query/0003/0003/0003_C2_F0001_X1.jpg',
                 'gallery/0003/0004/0003C5F0007X2.jpg'])
    convert('dukev', '--dataset_root', root, '--output_dir', output)
    assert list(read(output, 'dukev', 'train').names) == ['0001/6/0001', '0002/1/0005']
    assert list(read(output, 'dukev', 'test').names) == ['0003/5/0004']
    touch(root, ['train/0002/0005/0009_C1_F0002_X1.jpg'])
    with pytest.raises(ConversionError, match='is not a DukeMTMC-VideoReID frame of person 0002'):
        convert('dukev', '--dataset_root', root, '--output_dir', str(tmp_path / 'other'))
    assert not os.path.exists(str(tmp_path / 'other'))


def test_a_tree_of_another_dataset_is_refused(tmp_path):
    touch(str(tmp_path), ['bounding_box_train/0001_c1s1_000001_00.jpg'])
    for dataset in convert_video.DATASETS:
        with pytest.raises(ConversionError, match='has no folder|is not an extracted|missing'):
            convert(dataset, '--dataset_root', str(tmp_path), '--output_dir',
                    str(tmp_path / 'out'))


def test_splits_that_contradict_themselves_are_refused_by_name(tmp_path):
    output = str(tmp_path / 'out')
    # MARS info that lists frames twice: the same tracklet row again.
    root = str(tmp_path / 'MARS')
    make_mars(root)
    savemat(os.path.join(root, 'info', 'tracks_train_info.mat'), {'track_train_info': np.array(
        [[1, 2, 1, 1], [3, 3, 1, 2], [1, 2, 1, 1], [5, 6, 2, 3]], float)})
    with pytest.raises(ConversionError, match=r'list the frame `bbox_train/0001/0001C1T0001F001'
                       r'\.jpg` \(identity 0001, camera 1, track 0001, frame 1\) twice in the '
                       r'train split'):
        convert('mars', '--dataset_root', root, '--output_dir', output)
    # A test tracklet that is a query and in the gallery.
    make_mars(str(tmp_path / 'MARS2'))
    savemat(os.path.join(tmp_path, 'MARS2', 'info', 'tracks_test_info.mat'), {
        'track_test_info': np.array([[1, 2, 3, 1], [1, 2, 3, 1], [4, 4, 0, 3]], float)})
    with pytest.raises(ConversionError, match=r'twice in the query and the test split'):
        convert('mars', '--dataset_root', str(tmp_path / 'MARS2'), '--output_dir', output)
    # A PRID-2011 split naming a person in training and testing.
    root = str(tmp_path / 'PRID2011')
    both = ['person_{:04d}'.format(i) for i in range(1, 5)]
    touch(root, ['prid_2011/multi_shot/{}/{}/{:04d}.png'.format(c, p, f)
                 for c in ('cam_a', 'cam_b') for p in both for f in (1, 2)])
    splits = str(tmp_path / 'splits_prid2011.json')
    json.dump([{'train': both[:3], 'test': both[2:]}], open(splits, 'w'))
    with pytest.raises(ConversionError, match=r'puts 1 of its identities, such as '
                       r'`person_0003`, in training and in the query set'):
        convert('prid2011', '--dataset_root', root, '--output_dir', output, '--splits', splits)
    # An iLIDS-VID split row that names a person twice, once in each half.
    root = str(tmp_path / 'iLIDS-VID')
    people = ['person{:03d}'.format(i) for i in (1, 2, 4, 7)]
    touch(root, ['i-LIDS-VID/sequences/{0}/{1}/{0}_{1}_{2:05d}.png'.format(c, p, f)
                 for c in ('cam1', 'cam2') for p in people for f in (317, 318)])
    os.makedirs(os.path.join(root, 'train-test people splits'))
    savemat(os.path.join(root, 'train-test people splits', 'train_test_splits_ilidsvid.mat'),
            {'ls_set': np.array([[1, 2, 1, 4]], float)})
    with pytest.raises(ConversionError, match=r'names `person001` twice'):
        convert('ilidsvid', '--dataset_root', root, '--output_dir', output)
    # A DukeMTMC-VideoReID tree with a training person in the gallery.
    root = str(tmp_path / 'DukeV')
    touch(root, ['train/0001/0001/0001_C6_F0001_X1.jpg', 'query/0003/0003/0003_C2_F0001_X1.jpg',
                 'gallery/0001/0004/0001_C5_F0007_X2.jpg'])
    with pytest.raises(ConversionError, match=r'such as `0001`, in training and in the test set'):
        convert('dukev', '--dataset_root', root, '--output_dir', output)
    assert not os.path.exists(output)


def test_a_splits_file_nested_deeper_than_any_is_one_message(tmp_path):
    root = str(tmp_path / 'PRID2011')
    touch(root, ['prid_2011/multi_shot/{}/person_000{}/0001.png'.format(c, p)
                 for c in ('cam_a', 'cam_b') for p in (1, 2)])
    splits = tmp_path / 'splits.json'
    splits.write_text('[' * 100000 + ']' * 100000)
    with pytest.raises(ConversionError, match=r'is not a splits file .*nested deeper than 64'):
        convert('prid2011', '--dataset_root', root, '--output_dir', str(tmp_path / 'out'),
                '--splits', str(splits))
