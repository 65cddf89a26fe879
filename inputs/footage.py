"""Camera footage to embeddings: the detections of a MOT-Challenge file, the
frames they lie in, the crops of their boxes that embed.py embeds (with the
frame, track, box and camera of each), and tracklets, one embedding per
track. TensorFlow-free.

A detections file has one box per line, `frame,id,bb_left,bb_top,bb_width,
bb_height[,conf,x,y,z]`, as MOT-Challenge's det.txt and gt.txt: frames are
numbered from 1 in the order of the frame files' numbers, `id` is the track
(-1 for a detection of no track), and the box is in pixels, its top left
corner counted from 1 as MOT counts it.
"""

import collections
import csv
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.storage import files
from triplet_reid.common import IMAGE_EXTENSIONS


# The longest line a MOT file may hold: ten numbers of 25 characters each
# take 260 bytes, and this leaves room for padding.
MAX_LINE_BYTES = 1024

# Frames and ids are read as floats (MOT files write them as `1` or `1.0`),
# which hold integers exactly below 2**53.
MAX_NUMBER = 2 ** 53

# The farthest a box may reach, in pixels: 2**31, beyond any frame's size.
MAX_PIXELS = 2 ** 31


@dataclass(frozen=True)
class Detection:
    """One line of a detections file: its number, frame, track and box
    (left, top, width, height) with the left and top counted from 0."""
    line: int
    frame: int
    track: int
    box: tuple


def read_detections(path):
    """The `Detection`s of the MOT-Challenge file `path`, in file order.

    Raises:
        UserError naming the file and line of a line that is not
        `frame,id,left,top,width,height,...` with a frame from 1, an integer
        id, finite numbers and a box of positive size, of a track that is
        twice in one frame, or of a file without detections.
    """
    found, seen = [], {}
    for number, fields in read_lines(path):
        if not fields or not ''.join(fields).strip():
            continue
        detection = parse_line(fields, path, number)
        key = (detection.frame, detection.track)
        if detection.track >= 0 and key in seen:
            raise UserError('`{}` line {}: track {} is in frame {} twice (also line {}); a '
                            'track has one box per frame.'.format(
                                path, number, detection.track, detection.frame, seen[key]))
        seen[key] = number
        found.append(detection)
    if not found:
        raise UserError('`{}` holds no detections; it needs lines `frame,id,bb_left,bb_top,'
                        'bb_width,bb_height,...`.'.format(path))
    return found


@dataclass(frozen=True)
class Boxes:
    """The boxes of one camera: frames (N,) from 1, ids (N,) and boxes (N,
    4) as left, top, width, height, read from `path` (each from its line of
    `lines` (N,), when read from a file)."""
    path: str
    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    lines: np.ndarray = None


def read_boxes(path, what='tracks'):
    """The `Boxes` of the MOT file `path`, refusing a box of no identity
    (id -1), which a file of `what` with global identities has not."""
    found = read_detections(path)
    for detection in found:
        if detection.track < 0:
            raise UserError('`{}` line {}: the box has the id {}; {} with global identities '
                            'give each box its person\'s id (0 or more).'.format(
                                path, detection.line, detection.track, what))
    return Boxes(path, np.array([d.frame for d in found], np.int64),
                 np.array([d.track for d in found], np.int64),
                 np.array([d.box for d in found], np.float64),
                 np.array([d.line for d in found], np.int64))


def mot_line(frame, identity, box):
    """The MOT-Challenge line of a box (left, top, width, height, counted
    from 0 as `Detection.box` is) of `identity` in `frame`, which counts its
    left and top from 1."""
    left, top, width, height = box
    return '{},{},{:.2f},{:.2f},{:.2f},{:.2f},1,-1,-1,-1\n'.format(
        frame, identity, left + 1, top + 1, width, height)


# What a detections file is, as read_lines's messages say it.
MOT_TEXT = 'a detections file is MOT-Challenge text, a line `frame,id,bb_left,bb_top,bb_width,' \
    'bb_height,...` each'


def read_lines(path, what='the detections', form=MOT_TEXT):
    """Yields (line number, fields) of the detections file `path`, one line
    at a time, refusing at once by line what no MOT file holds: a line
    longer than `MAX_LINE_BYTES`, binary content, text that is not UTF-8; and
    a path that is not a regular file (a device or pipe never ends). Another
    text file of short lines (a converter's) is read alike: `what` names it
    and `form` says in the messages what it should be."""
    files.check_regular(path, what, 'pass a text file: ' + form)
    try:
        with open(path, 'rb') as f:
            for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b''), 1):
                yield number, fields_of(line, path, number, form)
    except OSError as e:
        raise UserError('cannot read {} `{}`: {}.'.format(what, path, e.strerror or e))


def fields_of(line, path, number, form=MOT_TEXT):
    """The comma-separated fields of one line (bytes) of the detections file."""
    def fail(problem):
        return UserError('`{}` line {}: {}; {}.'.format(path, number, problem, form))
    if len(line) > MAX_LINE_BYTES:
        raise fail('the line is longer than {} bytes, which no MOT line is'.format(
            MAX_LINE_BYTES))
    if b'\0' in line:
        raise fail('the line holds binary content (a NUL byte)')
    try:
        text = line.decode('utf-8-sig' if number == 1 else 'utf-8')
    except UnicodeDecodeError:
        raise fail('the line is not UTF-8 text')
    return next(csv.reader([text.rstrip('\r\n')]), [])


def parse_line(fields, path, number):
    """The `Detection` of the `fields` of line `number` of `path`."""
    def fail(problem):
        return UserError('`{}` line {}: {}; a line is `frame,id,bb_left,bb_top,bb_width,'
                         'bb_height,...` (MOT-Challenge), found `{}`.'.format(
                             path, number, problem, ','.join(fields)[:200]))
    if len(fields) < 6:
        raise fail('{} fields where at least 6 are needed'.format(len(fields)))
    try:
        frame, track, left, top, width, height = (float(fields[i]) for i in range(6))
    except ValueError:
        raise fail('the frame and id must be integers and the box numbers')
    if not all(math.isfinite(v) for v in (frame, track, left, top, width, height)):
        raise fail('a number is not finite')
    if frame != int(frame) or track != int(track):
        raise fail('the frame and id must be integers')
    frame, track = int(frame), int(track)
    if frame < 1:
        raise fail('frame {} is before the first frame, 1'.format(frame))
    if frame >= MAX_NUMBER or not -MAX_NUMBER < track < MAX_NUMBER:
        raise fail('the frame and id must be below 2**53, which a float holds exactly')
    if width <= 0 or height <= 0:
        raise fail('the box is {} × {} pixels, which holds nothing'.format(width, height))
    if max(abs(left), abs(top), width, height) > MAX_PIXELS:
        raise fail('the box reaches beyond {} pixels, farther than any frame'.format(MAX_PIXELS))
    return Detection(number, frame, track, (left - 1, top - 1, width, height))


def frame_files(folder):
    """{frame number: path} of the images of `folder`, numbered by the last
    number in each file's name (MOT-Challenge's img1/000001.jpg is frame 1).

    Raises:
        UserError for a folder without numbered images, or two files of one
        frame number.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise UserError('cannot read the frames folder `{}`: {}.'.format(folder, e.strerror))
    frames = {}
    for name in names:
        numbers = re.findall(r'\d+', os.path.splitext(name)[0])
        if not name.lower().endswith(IMAGE_EXTENSIONS) or not numbers:
            continue
        number = int(numbers[-1])
        if number in frames:
            raise UserError('`{}` and `{}` in `{}` are both frame {}; give each frame one '
                            'numbered file.'.format(os.path.basename(frames[number]), name,
                                                    folder, number))
        frames[number] = os.path.join(folder, name)
    if not frames:
        raise UserError('`{}` holds no numbered frame images (such as 000001.jpg).'.format(
            folder))
    return frames


def clip_box(box, size, margin):
    """The box (left, top, width, height) grown by `margin` of its width and
    height on each side and clipped to a frame of (width, height) `size`,
    as integer pixel bounds (left, top, right, bottom), or None when nothing
    of it lies in the frame."""
    left, top, width, height = box
    bounds = (max(0, math.floor(left - margin * width)), max(0, math.floor(top - margin * height)),
              min(size[0], math.ceil(left + width + margin * width)),
              min(size[1], math.ceil(top + height + margin * height)))
    return bounds if bounds[2] > bounds[0] and bounds[3] > bounds[1] else None


@dataclass(frozen=True)
class VideoFile:
    """A video file whose frames are numbered from 1 in decoding order, as
    MOT-Challenge numbers the frames of a sequence."""
    path: str


def frame_source(path):
    """The frames of `path`: a `VideoFile` for a file, else `frame_files` of the folder."""
    return VideoFile(path) if os.path.isfile(path) else frame_files(path)


def frame_name(frames, number):
    """The name of frame `number`: its file's, or `NNNNNN` in a video."""
    if isinstance(frames, VideoFile):
        return '{:06d}'.format(number)
    return os.path.basename(frames[number])


def folder_images(frames, wanted, max_pixels):
    """Yields (frame number, RGB PIL image) of the `wanted` frame numbers (sorted)
    of a frames folder (`frame_files`'s dict)."""
    from PIL import Image
    for number in wanted:
        files.check_regular(frames[number], 'the frame', 'replace it with an image file')
        try:
            with Image.open(frames[number]) as image:
                check_frame_size(image.size, frames[number], max_pixels)
                yield number, image.convert('RGB')
        except (OSError, Image.DecompressionBombError) as e:
            raise UserError('cannot decode the frame `{}` ({}); replace it.'.format(
                frames[number], str(e).splitlines()[0][:200]))


def check_frame_size(size, what, max_pixels):
    if max_pixels and size[0] * size[1] > max_pixels:
        raise UserError('the frame `{}` has {}×{} pixels, more than --max_image_pixels '
                        '{}.'.format(what, *size, max_pixels))


def video_images(video, wanted, max_pixels):
    """Yields (frame number, RGB PIL image) of the `wanted` frame numbers
    (sorted) of a `VideoFile`, decoding one frame at a time and stopping after
    the last one wanted, so memory holds one frame whatever the video's
    length. Frames past the video's end are not yielded."""
    import av
    files.check_regular(video.path, 'the video', 'pass a video file or a frames folder')
    wanted, number = set(wanted), 0
    last = max(wanted)
    try:
        with av.open(video.path, metadata_errors='ignore') as container:
            if not container.streams.video:
                raise UserError('`{}` holds no video stream; pass a video file or a frames '
                                'folder.'.format(video.path))
            stream = container.streams.video[0]
            check_frame_size((stream.codec_context.width, stream.codec_context.height),
                             video.path, max_pixels)
            for frame in container.decode(stream):
                number += 1
                if number in wanted:
                    check_frame_size((frame.width, frame.height), '{}` frame `{}'.format(
                        video.path, number), max_pixels)
                    yield number, frame.to_image().convert('RGB')
                if number >= last:
                    return
    except av.FFmpegError as e:
        raise UserError('cannot decode `{}` at frame {} ({}); the video is damaged or its codec '
                        'is not supported. Convert it (for example with ffmpeg to H.264) or '
                        'cut it into a frames folder.'.format(video.path, number + 1,
                                                              str(e).splitlines()[0][:200]))


def crop_detections(detections, frames, folder, margin=0.0, min_size=1, max_pixels=None,
                    path='the detections', progress=None):
    """Crops the box of each detection out of its frame into `folder` (as
    PNG, lossless) and returns what was cropped.

    Args:
        frames: A frames folder's `frame_files` dict, or a `VideoFile`.

    Returns:
        (crops, skipped): the crops as (file name in `folder`, `Detection`,
        (left, top, width, height) clipped), in file order, and the number of
        detections left out because their clipped box is narrower or lower
        than `min_size` pixels.

    Raises:
        UserError naming the line of a detection whose frame has no file or
        lies past the video's end, or whose box lies wholly outside its
        frame, or naming a frame that cannot be decoded or has more than
        `max_pixels` pixels.
    """
    video = isinstance(frames, VideoFile)
    by_frame = collections.defaultdict(list)
    for detection in detections:
        if not video and detection.frame not in frames:
            raise UserError('`{}` line {}: frame {} has no file in the frames folder (it holds '
                            'frames {} to {}).'.format(path, detection.line, detection.frame,
                                                       min(frames), max(frames)))
        by_frame[detection.frame].append(detection)
    crops, skipped, last = {}, 0, 0
    images = (video_images if video else folder_images)(frames, sorted(by_frame), max_pixels)
    for done, (frame, image) in enumerate(images, 1):
        last = frame
        for detection in by_frame[frame]:
            bounds = clip_box(detection.box, image.size, margin)
            if bounds is None:
                raise UserError('`{}` line {}: the box lies wholly outside frame {} ({}×{} '
                                'pixels).'.format(path, detection.line, frame, *image.size))
            if min(bounds[2] - bounds[0], bounds[3] - bounds[1]) < min_size:
                skipped += 1
                continue
            name = '{:08d}.png'.format(detection.line)
            image.crop(bounds).save(os.path.join(folder, name))
            crops[detection.line] = (name, detection, (bounds[0], bounds[1],
                                                       bounds[2] - bounds[0],
                                                       bounds[3] - bounds[1]))
        if progress is not None:
            progress(done, len(by_frame))
    if last < max(by_frame):
        beyond = min((d for f in by_frame if f > last for d in by_frame[f]),
                     key=lambda d: (d.frame, d.line))
        raise UserError('`{}` line {}: frame {} lies past the end of the video `{}`, whose last '
                        'frame is {}; nothing was written.'.format(
                            path, beyond.line, beyond.frame, frames.path, last))
    return [crops[line] for line in sorted(crops)], skipped


def detection_names(crops, frames, camera):
    """The names that stand for the crops in the embeddings file and in
    dataset CSVs: `camera/frame-file#track`, or `#lineN` for a detection of
    no track."""
    return ['{}/{}#{}'.format(camera, frame_name(frames, d.frame),
                              d.track if d.track >= 0 else 'line{}'.format(d.line))
            for _, d, _ in crops]


def detection_fields(crops, camera):
    """The embeddings file's fields of the crops: {'camera': (N,), 'frame':
    (N,), 'track': (N,), 'box': (N, 4) left, top, width, height}."""
    return {'camera': np.array([camera] * len(crops), dtype=object),
            'frame': np.array([d.frame for _, d, _ in crops], dtype=np.int64),
            'track': np.array([d.track for _, d, _ in crops], dtype=np.int64),
            'box': np.array([box for _, _, box in crops], dtype=np.float32).reshape(-1, 4)}


def tracklets(embs, fields, aggregate):
    """One embedding per track: the crops' embeddings (N, D) of each
    (camera, track) with a track id, combined by `aggregate` ((A, 1, D) ->
    (1, D), an aggregator of `aggregators.AGGREGATORS`), tracks in order of
    their first crop.

    Returns:
        (track embeddings (T, D), names `camera/trackID` (T,), fields
        {'camera', 'track', 'frame' (first), 'last_frame', 'crops'}).
    """
    groups = collections.OrderedDict()
    for row, (camera, track) in enumerate(zip(fields['camera'], fields['track'])):
        if track >= 0:
            groups.setdefault((str(camera), int(track)), []).append(row)
    if not groups:
        raise UserError('--tracklets needs detections of tracks (an id of 0 or more); these '
                        'all have the id -1.')
    rows = list(groups.values())
    combined = np.concatenate([aggregate(embs[r][:, None]) for r in rows]).astype(np.float32)
    frames = fields['frame']
    return combined, ['{}/track{}'.format(c, t) for c, t in groups], {
        'camera': np.array([c for c, _ in groups], dtype=object),
        'track': np.array([t for _, t in groups], dtype=np.int64),
        'frame': np.array([frames[r].min() for r in rows], dtype=np.int64),
        'last_frame': np.array([frames[r].max() for r in rows], dtype=np.int64),
        'crops': np.array([len(r) for r in rows], dtype=np.int64)}
