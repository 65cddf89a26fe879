"""The shared logic of the camera-based excluders: every dataset but `diagonal`."""

import os
import re

import numpy as np

from triplet_reid import cli


def parse(fids, pattern, description):
    """Extracts (pids, cids) from file names with a regular expression.

    Returns:
        Two arrays of strings, the identity and the camera of each file, as
        the pattern's first and second groups match them.
    """
    regexp = re.compile(pattern)
    pids, cids = [], []
    for fid in fids:
        name = os.path.splitext(os.path.basename(fid))[0]
        match = regexp.match(name)
        if match is None:
            raise cli.UserError(
                'the file name `{}` does not match the {} pattern `{}`; use the excluder '
                'that fits the dataset (or `diagonal`).'.format(fid, description, pattern))
        pids.append(match.group(1))
        cids.append(match.group(2))
    return np.asarray(pids), np.asarray(cids)


def same_camera_excluder(query_fids, gallery_fids, pattern, description, camera=None):
    """Excludes the same identity seen by the same camera, and junk (identity -1).

    Args:
        camera: Optionally maps the pattern's second groups (an array of
            strings) to the cameras, for names that say the camera indirectly.
    """
    query_pids, query_cids = parse(query_fids, pattern, description)
    gallery_pids, gallery_cids = parse(gallery_fids, pattern, description)
    if camera is not None:
        query_cids, gallery_cids = camera(query_cids), camera(gallery_cids)
    return camera_mask(query_pids, query_cids, gallery_pids, gallery_cids)


def camera_mask(query_pids, query_cids, gallery_pids, gallery_cids):
    """The mask function of the same identity seen by the same camera, and
    of gallery junk (identity -1), from the identities and cameras (arrays of
    strings) of the queries and the gallery."""
    # Integer codes make the (b, G) comparisons cheap.
    _, pid_codes = np.unique(np.concatenate([query_pids, gallery_pids]), return_inverse=True)
    _, cid_codes = np.unique(np.concatenate([query_cids, gallery_cids]), return_inverse=True)
    q_pid, g_pid = pid_codes[:len(query_pids)], pid_codes[len(query_pids):]
    q_cid, g_cid = cid_codes[:len(query_cids)], cid_codes[len(query_cids):]
    junk = np.asarray(gallery_pids) == '-1'

    def mask(query_indices):
        same = (g_pid[None] == q_pid[query_indices, None]) & \
               (g_cid[None] == q_cid[query_indices, None])
        return same | junk[None]
    return mask
