"""A camera network's topology: which cameras a person walks between, and
how long that takes. TensorFlow-free.

A JSON file:

    {"clock": "seconds",
     "cameras": {"c1": {"fps": 25, "start": 0}, "c2": {"fps": 30, "start": 12.5}},
     "links": [{"cameras": ["c1", "c2"], "min": 4, "max": 40}]}

Without "links", any camera may follow any other (a file that gives only
the cameras' clocks, as the converters of public sets write it); with
"overlaps", a list of camera pairs whose views overlap, a person may be in
both at once (WILDTRACK's seven cameras watch one square).

`clock` says what the times are: "frames" (the default), when the cameras'
frame numbers are one shared clock, or "seconds", when each camera has its
frame rate `fps` and the time `start` (seconds) of its frame 1 on a shared
clock. Each link joins two cameras, both ways, with the least and most time
(in the clock's unit) from leaving one to entering the other; cameras
without a link between them are never joined. A person seen again by the
same camera needs no link.
"""

import math
from dataclasses import dataclass

from triplet_reid.cli import UserError
from triplet_reid.storage.json_files import read_json

CLOCKS = ('frames', 'seconds')

# The most cameras and links a topology may name: city-scale networks have
# hundreds of cameras.
MAX_CAMERAS = 10_000
MAX_LINKS = 100_000


# A person may walk through up to this many links between two tracks: the
# cameras between may have missed them (a detector's miss, a track given to
# someone else).
MAX_HOPS = 3


def paths(links, hops=MAX_HOPS):
    """{(camera, other): (least, most)} of the walks along up to `hops`
    `links` ({(camera, camera): (least, most)}, both orders) that pass no
    camera twice: the least time of the quickest walk and the most of the
    slowest, from each camera to each other one."""
    onward = {}
    for (a, b), window in links.items():
        onward.setdefault(a, []).append((b, window))
    reach = {}

    def walk(start, here, least, most, seen):
        for there, (more_least, more_most) in onward.get(here, []):
            if there in seen:
                continue
            window = (least + more_least, most + more_most)
            old = reach.get((start, there))
            reach[start, there] = window if old is None else (min(old[0], window[0]),
                                                              max(old[1], window[1]))
            if len(seen) < hops:
                walk(start, there, *window, seen | {there})
    for start in onward:
        walk(start, start, 0.0, 0.0, {start})
    return reach


@dataclass(frozen=True)
class Topology:
    """`clock` (one of `CLOCKS`), `cameras` {name: (fps, start)} (for
    seconds), `links` {(camera, camera): (least, most)}, both orders, or
    None for any camera after any other; a person walks along up to
    `MAX_HOPS` of them between two tracks (`paths`). `overlaps` holds the
    pairs of cameras (both orders) that can see a person at once."""
    clock: str
    cameras: dict
    links: dict = None
    overlaps: frozenset = frozenset()

    def __post_init__(self):
        object.__setattr__(self, 'reach', None if self.links is None else paths(self.links))

    def allows(self, camera, other, gap):
        """Whether a person can leave `camera` and enter `other` `gap` later."""
        if self.reach is None:
            return True
        window = self.reach.get((camera, other))
        return window is not None and window[0] <= gap <= window[1]

    def together(self, camera, other):
        """Whether `camera` and `other` can see one person at once."""
        return (camera, other) in self.overlaps

    def times(self, camera, frames):
        """The shared clock's times of `camera`'s frame numbers (an array)."""
        if self.clock == 'frames':
            return frames.astype('float64')
        fps, start = self.cameras[camera]
        return start + (frames - 1) / fps

    def check_cameras(self, cameras, where):
        """Refuses a topology that names a camera of none of the tracks
        (`cameras`, read from `where`), or, on a clock of seconds, lacks
        the frame rate of a camera of the tracks."""
        named = {camera for pair in list(self.links or ()) + list(self.overlaps)
                 for camera in pair} | set(self.cameras)
        unknown = sorted(named - set(cameras))
        if unknown:
            raise UserError('the topology names camera `{}`, which none of the tracks of {} '
                            'is from (their cameras: {}); name the cameras as the tracks '
                            'do.'.format(unknown[0], where, ', '.join(sorted(cameras))))
        if self.clock == 'seconds':
            missing = sorted(set(cameras) - set(self.cameras))
            if missing:
                raise UserError('the topology\'s clock is seconds, and it gives no frame rate '
                                'and start of camera `{}`; add it under "cameras".'.format(
                                    missing[0]))


def number(value, what, path, least=None, above=None):
    """`value` as a finite float, at least `least` or above `above`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or (least is not None and value < least) or (above is not None and
                                                              value <= above):
        bound = '' if least is None and above is None else ', {} {}'.format(
            'at least' if least is not None else 'above', least if least is not None else above)
        raise UserError('`{}`: {} is `{}`, which is not a finite number{}.'.format(
            path, what, str(value)[:50], bound))
    return float(value)


def read_topology(path):
    """The `Topology` of the JSON file `path` (see the module's description).

    Raises:
        UserError naming the file and the setting of anything else: an
        unknown clock, a frame rate of zero or less, a link of other than
        two distinct cameras, a negative or inverted window, a pair given twice.
    """
    data = read_json(path, 'pass a camera topology (see docs/tracking.md)')
    unknown = sorted(set(data) - {'clock', 'cameras', 'links', 'overlaps'})
    if unknown:
        raise UserError('`{}` holds `{}`; a topology holds "clock", "cameras", "links" and '
                        '"overlaps".'.format(path, unknown[0]))
    clock = data.get('clock', 'frames')
    if clock not in CLOCKS:
        raise UserError('`{}`: the clock is `{}`; it is "frames" or "seconds".'.format(
            path, str(clock)[:50]))
    cameras, links = data.get('cameras', {}), data.get('links', [])
    overlaps = data.get('overlaps', [])
    if not isinstance(overlaps, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(c, str) for c in pair)
            and pair[0] != pair[1] for pair in overlaps) or len(overlaps) > MAX_LINKS:
        raise UserError('`{}`: "overlaps" is a list of pairs of two different cameras whose '
                        'views overlap.'.format(path))
    if not isinstance(cameras, dict) or not isinstance(links, list):
        raise UserError('`{}`: "cameras" is an object {{name: {{"fps", "start"}}}} and "links" '
                        'a list.'.format(path))
    if len(cameras) > MAX_CAMERAS or len(links) > MAX_LINKS:
        raise UserError('`{}` names more than {} cameras or {} links.'.format(
            path, MAX_CAMERAS, MAX_LINKS))
    clocks = {}
    for name, camera in cameras.items():
        if not isinstance(camera, dict) or set(camera) - {'fps', 'start'}:
            raise UserError('`{}`: camera `{}` is {{"fps": frames a second, "start": seconds '
                            'of its frame 1}}.'.format(path, name))
        clocks[name] = (number(camera.get('fps', 1.0 if clock == 'frames' else None),
                               'the fps of camera `{}`'.format(name), path, above=0),
                        number(camera.get('start', 0.0), 'the start of camera `{}`'.format(
                            name), path))
    windows = {}
    for index, link in enumerate(links, 1):
        pair = link.get('cameras') if isinstance(link, dict) else None
        if (not isinstance(pair, list) or len(pair) != 2 or not all(
                isinstance(c, str) for c in pair) or pair[0] == pair[1]):
            raise UserError('`{}`: link {} is not {{"cameras": [two different names], "min": '
                            'least time, "max": most time}}.'.format(path, index))
        least = number(link.get('min'), 'the min of link {}'.format(index), path, least=0)
        most = number(link.get('max'), 'the max of link {}'.format(index), path, least=0)
        if most < least:
            raise UserError('`{}`: link {} ({} – {}) takes at most {} and at least {}; its max '
                            'is below its min.'.format(path, index, *pair, most, least))
        if tuple(pair) in windows:
            raise UserError('`{}`: link {} joins {} and {} again; give each pair once.'.format(
                path, index, *pair))
        windows[tuple(pair)] = windows[tuple(pair[::-1])] = (least, most)
    together = frozenset(tuple(p) for pair in overlaps for p in (pair, pair[::-1]))
    return Topology(clock, clocks, windows if 'links' in data else None, together)
