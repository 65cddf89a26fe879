"""Datasets written by `data/convert.py folders`: the identity is the first folder of
each path; with `camera_regex`, ignore the same identity seen by the same camera,
as the public datasets' protocols do; without, only an image matched with itself."""

import os

import numpy as np

from triplet_reid import cli
from triplet_reid.cli import patterns
from triplet_reid.excluders import diagonal


def excluder(query_fids, gallery_fids, camera_regex=None):
    if camera_regex is None:
        return diagonal.excluder(query_fids, gallery_fids)
    regexp = patterns.compile(camera_regex, '--camera_regex')

    def parse(fids):
        identities, cameras = [], []
        for fid in fids:
            match = regexp.search(os.path.basename(fid))
            if match is None or not match.groups() or '/' not in fid:
                raise cli.UserError(
                    'the file name `{}` is not `identity/…` with a camera matching '
                    '--camera_regex `{}` (its first group); use the regex that '
                    'data/convert.py folders was given.'.format(fid, camera_regex))
            identities.append(fid.split('/', 1)[0])
            cameras.append(match.group(1))
        return np.asarray(identities), np.asarray(cameras)

    query_ids, query_cams = parse(query_fids)
    gallery_ids, gallery_cams = parse(gallery_fids)
    query, gallery = np.asarray(query_fids), np.asarray(gallery_fids)

    def mask(query_indices):
        same = (gallery_ids[None] == query_ids[query_indices, None]) & \
               (gallery_cams[None] == query_cams[query_indices, None])
        return same | (query[query_indices, None] == gallery[None])
    return mask
