"""Multi-camera tracking scores: IDF1, IDP, IDR and HOTA of tracks with
global identities against ground truth with global identities, per camera
and across all cameras, computed by TrackEval (JonathonLuiten/TrackEval,
the code of the MOT-Challenge and of HOTA's authors). TensorFlow-free.

Both sides are MOT-Challenge files, one a camera (`frame,id,bb_left,bb_top,
bb_width,bb_height,...`, read by `inputs.footage.read_boxes`), whose
ids are global: the same person has the same id in every camera. A box
matches a ground-truth box at an intersection over union of at least 0.5
(IDF1's threshold; HOTA averages over thresholds from 0.05 to 0.95).

Across cameras the cameras' frames are one sequence, camera after camera,
so that an identity's single mapping to a ground-truth identity must hold in
every camera: the multi-camera IDF1 of DukeMTMC-MTMC and the AI City
Challenge, where a person followed well in each camera but given two ids in
two cameras loses half of their boxes.
"""

import collections

import numpy as np

from triplet_reid.cli import UserError

# The name of the scores of all cameras together, beside each camera's.
ALL_CAMERAS = 'all cameras'


def box_ious(first, second):
    """Intersection over union of boxes (N, 4) and (M, 4), left, top, width,
    height: (N, M), by TrackEval's own function."""
    from trackeval.datasets._base_dataset import _BaseDataset
    return _BaseDataset._calculate_box_ious(first, second, box_format='xywh')


def sequence(truth, tracks):
    """TrackEval's data of one sequence: the frames of `truth` and `tracks`
    (each a list of `inputs.footage.Boxes`, one per camera, in the same order; the frames of
    one camera follow the previous camera's), ids numbered from 0 as its
    metrics index them, and the boxes' overlaps in each frame."""
    steps = []
    for gt, tr in zip(truth, tracks):
        frames = np.union1d(gt.frames, tr.frames)
        gt_rows = collections.defaultdict(list)
        tr_rows = collections.defaultdict(list)
        for row, frame in enumerate(gt.frames):
            gt_rows[frame].append(row)
        for row, frame in enumerate(tr.frames):
            tr_rows[frame].append(row)
        for frame in frames:
            g, t = gt_rows.get(frame, []), tr_rows.get(frame, [])
            steps.append((gt.ids[g], tr.ids[t], box_ious(gt.boxes[g].reshape(-1, 4),
                                                         tr.boxes[t].reshape(-1, 4))))
    gt_ids = np.unique(np.concatenate([gt.ids for gt in truth]))
    tr_ids = np.unique(np.concatenate([tr.ids for tr in tracks]))
    return {'num_timesteps': len(steps), 'num_gt_ids': len(gt_ids),
            'num_tracker_ids': len(tr_ids),
            'num_gt_dets': int(sum(len(gt.ids) for gt in truth)),
            'num_tracker_dets': int(sum(len(tr.ids) for tr in tracks)),
            'gt_ids': [np.searchsorted(gt_ids, g) for g, _, _ in steps],
            'tracker_ids': [np.searchsorted(tr_ids, t) for _, t, _ in steps],
            'similarity_scores': [s for _, _, s in steps]}


def scores_of(data):
    """{IDF1, IDP, IDR, HOTA, DetA, AssA} (fractions) of TrackEval's data of
    one sequence; HOTA and its parts averaged over its thresholds, as
    TrackEval reports them."""
    from trackeval.metrics import HOTA, Identity
    # TrackEval prints each metric's settings unless told not to.
    identity = Identity({'PRINT_CONFIG': False}).eval_sequence(data)
    hota = HOTA({'PRINT_CONFIG': False}).eval_sequence(data)
    return {'IDF1': float(identity['IDF1']), 'IDP': float(identity['IDP']),
            'IDR': float(identity['IDR']), 'HOTA': float(np.mean(hota['HOTA'])),
            'DetA': float(np.mean(hota['DetA'])), 'AssA': float(np.mean(hota['AssA']))}


def evaluate(truth, tracks):
    """The scores of `tracks` against `truth`, both {camera:
    `inputs.footage.Boxes`} of the
    same cameras: {camera: scores, ALL_CAMERAS: scores} (see `scores_of`).

    Raises:
        UserError for cameras that one side has and the other lacks.
    """
    missing = sorted(set(truth) ^ set(tracks))
    if missing:
        side = 'ground truth' if missing[0] in tracks else 'tracks'
        raise UserError('camera `{}` has no {}; give the ground truth and the tracks of the '
                        'same cameras.'.format(missing[0], side))
    cameras = sorted(truth)
    found = {camera: scores_of(sequence([truth[camera]], [tracks[camera]]))
             for camera in cameras}
    found[ALL_CAMERAS] = scores_of(sequence([truth[c] for c in cameras],
                                            [tracks[c] for c in cameras]))
    return found


# The scores, in the order tables show them.
SCORES = ('IDF1', 'IDP', 'IDR', 'HOTA', 'DetA', 'AssA')
