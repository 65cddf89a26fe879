"""Tracklets of video re-id sets (MARS, iLIDS-VID, PRID-2011, DukeMTMC-VideoReID,
footage), named `identity/camera/track` as embed.py names them: ignore the
same identity seen by the same camera, and junk tracklets (identity -1),
the MARS protocol."""

import numpy as np

import cli


def excluder(query_fids, gallery_fids):
    def parse(names):
        parts = [str(name).split('/') for name in names]
        bad = next((name for name, part in zip(names, parts) if len(part) != 3), None)
        if bad is not None:
            raise cli.UserError('`{}` is not a tracklet name `identity/camera/track`; embed the '
                                'tracklet CSV with embed.py, or use the excluder of an image '
                                'set.'.format(bad))
        return np.array([p[0] for p in parts]), np.array([p[1] for p in parts])

    query_ids, query_cams = parse(query_fids)
    gallery_ids, gallery_cams = parse(gallery_fids)
    junk = gallery_ids == '-1'

    def mask(query_indices):
        same = (gallery_ids[None] == query_ids[query_indices, None]) & \
               (gallery_cams[None] == query_cams[query_indices, None])
        return same | junk[None]
    return mask
