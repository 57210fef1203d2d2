"""Episode bags -> training samples at the control rate.

Sample k of an episode is the k-th command the driver sent after the instruction arrived: the observation
is the newest camera frame and joint state stamped at or before that command, the targets are the
commands k .. k + H_train - 1 (the training code pads past the episode's end and masks the padding).

Each bag becomes one shard (``shards/<bag>.npz``: JPEG frames, states, actions, frame index, metadata);
shards already built are skipped, so a build resumes where it stopped and new bags only add shards.
Bags are checked first; a bag with missing topics, gaps or stamps that disagree with the recording clock
is skipped with the reason.
"""
from __future__ import annotations

import logging

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanovla_ros.data.config import DatasetBuildConfig  # noqa: F401 - re-exported for its users
from nanovla_ros.tasks import SQUARES
from nanovla_ros.camera.image_codec import ImageFields, fields_to_array
from nanovla_ros.configuration import param, require
from nanovla_ros.driver.config import SO101_JOINTS
from nanovla_ros.model.feature_cache import EpisodeData

# Reading bags needs `rosbags` and writing JPEG needs OpenCV; loading a built dataset (e.g. on a training
# machine) needs neither: frames decode with OpenCV or, without it, Pillow.

REQUIRED_TOPICS = ("camera/image_raw", "joint_states", "joint_commands")
CAMERA_TOPICS = {"wrist": "wrist_camera/image_raw"}  # further cameras: used when the bag has them
TOPICS = REQUIRED_TOPICS + ("current_task",) + tuple(CAMERA_TOPICS.values())

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A bag or dataset that cannot be used; the message names it and says why."""


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _joint_rows(messages, joints: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    stamps, rows = [], []
    for _, msg in messages:
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [j for j in joints if j not in index]
        if missing:
            raise DatasetError(f"joint state without joints {missing}")
        stamps.append(_stamp_ns(msg))
        rows.append([msg.position[index[j]] for j in joints])
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, np.int64)[order], np.asarray(rows, np.float64)[order]


def check_bag(bag, config: DatasetBuildConfig) -> list[str]:
    """Problems that make a bag unusable (empty list: fine)."""
    problems = []
    missing = [t for t in REQUIRED_TOPICS if not bag.messages.get(t)]
    if missing:
        return [f"missing topics {missing}"]
    for topic in REQUIRED_TOPICS:
        received = np.array([t for t, _ in bag.messages[topic]], np.int64)
        stamped = np.array([_stamp_ns(m) for _, m in bag.messages[topic]], np.int64)
        gaps = np.diff(np.sort(stamped)) / 1e9
        if len(gaps) and gaps.max() > config.max_gap_s:
            at = (np.sort(stamped)[int(gaps.argmax())] - stamped.min()) / 1e9
            problems.append(f"{topic}: a gap of {gaps.max():.2f} s at {at:.1f} s into the bag")
        # The median, not the maximum: a recorder starved of CPU receives some messages late (0.5 s seen on
        # two loaded cores), while unsynchronised clocks shift every stamp.
        skew = float(np.median(np.abs(received - stamped))) / 1e9
        if skew > config.max_stamp_skew_s:
            problems.append(f"{topic}: header stamps differ from the recording clock by {skew:.2f} s (median): "
                            f"unsynchronised clocks, or stamps not in wall-clock time")
    return problems


def bag_samples(bag, config: DatasetBuildConfig, joints: tuple[str, ...] = SO101_JOINTS) -> dict:
    """One episode's arrays (frames as RGB arrays) and counts; raises DatasetError for an unusable bag."""
    problems = check_bag(bag, config)
    if problems:
        raise DatasetError("; ".join(problems))
    cmd_t, cmd_q = _joint_rows(bag.messages["joint_commands"], joints)
    state_t, state_q = _joint_rows(bag.messages["joint_states"], joints)
    images = sorted(((_stamp_ns(m), m) for _, m in bag.messages["camera/image_raw"]), key=lambda x: x[0])
    image_t = np.array([t for t, _ in images], np.int64)
    tasks = bag.messages.get("current_task", [])
    # The episode starts when its instruction arrives (the newest current_task in the bag).
    start_ns = max(t for t, _ in tasks) if tasks else int(cmd_t[0])
    instruction = bag.metadata.get("instruction") or (tasks[-1][1].text if tasks else "")
    if not instruction:
        raise DatasetError("no instruction: neither bag metadata nor a current_task message")
    # Further cameras (the wrist view) recorded in the bag: each sample takes each camera's newest frame, and a
    # sample with any stale frame is dropped. A frame row is then a combination of one frame per camera.
    others = {c: sorted(((_stamp_ns(m), m) for _, m in bag.messages[t]), key=lambda x: x[0])
              for c, t in CAMERA_TOPICS.items() if bag.messages.get(t)}
    other_t = {c: np.array([t for t, _ in msgs], np.int64) for c, msgs in others.items()}
    keep, frame_of, state_of = [], [], []
    stale = 0
    for k in np.flatnonzero(cmd_t >= start_ns)[::config.sample_every]:
        f = int(np.searchsorted(image_t, cmd_t[k], side="right")) - 1
        s = int(np.searchsorted(state_t, cmd_t[k], side="right")) - 1
        o = tuple(int(np.searchsorted(other_t[c], cmd_t[k], side="right")) - 1 for c in others)
        if f < 0 or s < 0 or min(o, default=0) < 0:
            continue
        ages = [cmd_t[k] - image_t[f]] + [cmd_t[k] - other_t[c][i] for c, i in zip(others, o)]
        if max(ages) / 1e9 > config.max_image_age_s:
            stale += 1
            continue
        keep.append(k)
        frame_of.append((f, *o))
        state_of.append(s)
    if len(keep) < config.min_samples:
        raise DatasetError(f"only {len(keep)} usable samples ({stale} with a stale camera frame)")
    used = sorted(set(frame_of))
    remap = {f: i for i, f in enumerate(used)}

    def decode(m) -> np.ndarray:
        return fields_to_array(ImageFields(m.height, m.width, m.encoding, int(m.is_bigendian), m.step, bytes(m.data)),
                               "rgb8")

    frames = [decode(images[row[0]][1]) for row in used]
    camera_frames = {c: [decode(others[c][row[1 + j]][1]) for row in used] for j, c in enumerate(others)}
    keep = np.array(keep)
    # Targets: the commands from each kept sample onwards. Commands skipped for a stale frame still count as
    # targets, so the actions array is every command from the first kept one to the end.
    first = int(keep[0])
    return {"frames": frames, "camera_frames": camera_frames,
            "frame_index": np.array([remap[f] for f in frame_of], np.int64),
            "states": state_q[state_of].astype(np.float32), "actions": cmd_q[first:].astype(np.float32),
            "action_index": (keep - first).astype(np.int64), "instruction": instruction,
            "metadata": {k: v for k, v in bag.metadata.items() if k != "calibration"}, "stale": stale}


def encode_jpeg(frames: list[np.ndarray], quality: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    blobs = [cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1].ravel() for f in frames]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.concatenate(blobs).astype(np.uint8), offsets


def write_shard(path: Path, episode: dict, jpeg_quality: int, extra: dict | None = None) -> Path:
    """One episode's samples as a shard (written under a temporary name, then renamed)."""
    jpeg, offsets = encode_jpeg(episode["frames"], jpeg_quality)
    cameras = {}  # further cameras' frames, taken with the front camera's (same frame_index)
    for name, frames in episode.get("camera_frames", {}).items():
        if len(frames) != len(episode["frames"]):
            raise DatasetError(f"camera {name!r} has {len(frames)} frames, the front camera {len(episode['frames'])}")
        cameras[f"jpeg_{name}"], cameras[f"jpeg_offsets_{name}"] = encode_jpeg(frames, jpeg_quality)
    tmp = path.with_suffix(".partial.npz")
    np.savez(tmp, jpeg=jpeg, jpeg_offsets=offsets, **cameras, frame_index=episode["frame_index"],
             states=episode["states"], actions=episode["actions"], action_index=episode["action_index"],
             **{k: episode[k] for k in ("action_end", "task_xy_m", "cubes_xy_m") if k in episode},
             meta=np.array(json.dumps({"instruction": episode["instruction"], "stale_samples": episode.get("stale", 0),
                                       **(extra or {}), **episode["metadata"]})))
    tmp.replace(path)
    return path


def build_dataset(bags: str | Path, out_dir: str | Path, config: DatasetBuildConfig | None = None,
                  progress: bool = True) -> dict:
    """Turn every finished bag under ``bags`` into a shard under ``out_dir/shards``; return a summary."""
    from nanovla_ros.recording.bags import BagError, list_bags, read_episode

    config = config or DatasetBuildConfig()
    shards = Path(out_dir) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    paths = list(list_bags(bags))
    if not paths:
        raise DatasetError(f"no finished rosbag2 bags under {str(bags)!r}")
    summary = {"built": 0, "reused": 0, "skipped": {}, "samples": 0}
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="bags -> samples", unit="bag")
    for path in iterator:
        shard = shards / f"{path.name}.npz"
        if shard.is_file():
            summary["reused"] += 1
            continue
        try:
            bag = read_episode(path, list(TOPICS))
            if not config.include_failed and bag.metadata.get("task_success") != "true":
                summary["skipped"][path.name] = f"task_success={bag.metadata.get('task_success', 'missing')}"
                continue
            episode = bag_samples(bag, config)
        except (BagError, DatasetError) as error:
            summary["skipped"][path.name] = str(error)
            continue
        write_shard(shard, episode, config.jpeg_quality, {"bag": str(path)})
        summary["built"] += 1
    for name, reason in summary["skipped"].items():
        log.warning(f"skipped {name}: {reason}")
    return summary


class JpegFrames:
    """Frames kept as JPEG bytes, decoded on access: ``frames[a:b]`` -> (n, h, w, 3) uint8 RGB."""

    def __init__(self, blobs: np.ndarray, offsets: np.ndarray) -> None:
        self.blobs, self.offsets = blobs, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _decode(self, i: int) -> np.ndarray:
        blob = self.blobs[self.offsets[i]:self.offsets[i + 1]]
        try:
            import cv2
        except ImportError:
            import io

            from PIL import Image

            return np.asarray(Image.open(io.BytesIO(blob.tobytes())).convert("RGB"))
        return cv2.imdecode(blob, cv2.IMREAD_COLOR)[..., ::-1]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return np.stack([self._decode(i) for i in range(*key.indices(len(self)))])
        return self._decode(int(key))


@dataclass
class Demonstrations:
    """All shards of a dataset, concatenated. Unlike ``EpisodeData``, each episode's actions run to its last
    command (samples dropped for a stale frame leave their commands as targets)."""

    frames: JpegFrames
    frame_index: np.ndarray  # (N,)
    states: np.ndarray  # (N, S)
    actions: np.ndarray  # (M, A), episodes back to back
    action_index: np.ndarray  # (N,) row of ``actions`` of each sample's first target
    action_end: np.ndarray  # (N,) row of the last action of each sample's episode
    episode: np.ndarray  # (N,)
    instructions: list[str]  # per episode
    meta: list[dict] = field(default_factory=list)
    camera_frames: dict[str, JpegFrames] = field(default_factory=dict)  # cameras besides the front one, same rows
    # (N, 4) metres: the named cube's x, y and its goal's at each sample (simulated episodes record them:
    # the workcell's task positions); NaN rows where a shard has none (bags of a real arm).
    task_xy_m: np.ndarray | None = None
    # (N, 2K) metres: every cube's x, y at each sample, in the order of the episode's ``cube_colours`` metadata, and
    # (E,) the index in that order of the cube each episode's instruction names; NaN / -1 where unknown.
    cubes_xy_m: np.ndarray | None = None
    named_cube: np.ndarray | None = None
    # Goal queries: (E, S, 2) metres, each episode's target squares (in SQUARE_QUERY_COLOURS order; NaN unknown),
    # and per episode where its instruction's goal is in any scene: the index of a cube (stack: the other cube;
    # touch: the named one) or of a square (pick_place), -1 where neither (push, whose goal depends on where the
    # cube started, and episodes without positions).
    squares_xy_m: np.ndarray | None = None
    goal_cube: np.ndarray | None = None
    goal_square: np.ndarray | None = None

    def frames_of(self, camera: str) -> JpegFrames:
        if camera == "front":
            return self.frames
        if camera not in self.camera_frames:
            raise DatasetError(f"the dataset has no frames of camera {camera!r} (it holds "
                               f"{['front', *self.camera_frames]}): collect with --cameras front {camera}")
        return self.camera_frames[camera]

    def as_episode_data(self) -> EpisodeData:
        """The view the feature cache takes (frames and instructions)."""
        return EpisodeData(self.frames, self.states, self.actions[self.action_index], self.episode,
                           self.instructions, self.frame_index)


def load_demonstrations(out_dir: str | Path, kinds: tuple[str, ...] | None = None,
                        cameras: tuple[str, ...] = ("front",)) -> Demonstrations:
    """Every shard of ``out_dir`` (of ``kinds`` if given), with the frames of ``cameras`` (front always)."""
    files = sorted((Path(out_dir) / "shards").glob("*.npz"))
    files = [f for f in files if not f.name.endswith(".partial.npz")]
    blobs, offsets, frame_index, states, actions, action_index, action_end, episode = [], [0], [], [], [], [], [], []
    task_xy_m, cubes_xy_m, named_cube = [], [], []
    n_cubes = None
    instructions, metas = [], []
    extra = [c for c in cameras if c != "front"]
    extra_blobs: dict[str, list] = {c: [] for c in extra}
    extra_offsets: dict[str, list] = {c: [0] for c in extra}
    n_frames = n_actions = 0
    for f in files:
        with np.load(f) as z:
            meta = json.loads(str(z["meta"]))
            if kinds is not None and meta.get("task_kind") not in kinds:
                continue
            e = len(instructions)
            for c in extra:
                if f"jpeg_{c}" not in z.files:
                    raise DatasetError(f"shard {f.name} has no frames of camera {c!r}: collect with --cameras front {c}")
                extra_blobs[c].append(z[f"jpeg_{c}"])
                extra_offsets[c].extend((z[f"jpeg_offsets_{c}"][1:] + extra_offsets[c][-1]).tolist())
            blobs.append(z["jpeg"])
            offsets.extend((z["jpeg_offsets"][1:] + (offsets[-1])).tolist())
            frame_index.append(z["frame_index"] + n_frames)
            states.append(z["states"])
            actions.append(z["actions"])
            action_index.append(z["action_index"] + n_actions)
            # A sample's targets run to its episode's last command, or to its own ``action_end`` (DAgger shards:
            # each sample has its own label chunk).
            ends = z["action_end"] if "action_end" in z.files else np.full(len(z["states"]), len(z["actions"]) - 1)
            action_end.append(ends + n_actions)
            task_xy_m.append(z["task_xy_m"] if "task_xy_m" in z.files
                             else np.full((len(z["states"]), 4), np.nan, np.float32))
            colours = meta.get("cube_colours", [])
            if "cubes_xy_m" in z.files and n_cubes in (None, len(colours)) and meta.get("cube") in colours:
                n_cubes = len(colours)
                cubes_xy_m.append(z["cubes_xy_m"])
                named_cube.append(colours.index(meta["cube"]))
            else:
                cubes_xy_m.append(None)
                named_cube.append(-1)
            episode.append(np.full(len(z["states"]), e))
            n_frames += len(z["jpeg_offsets"]) - 1
            n_actions += len(z["actions"])
            instructions.append(meta["instruction"])
            metas.append(meta)
    if not instructions:
        raise DatasetError(f"no shards in {str(out_dir)!r}: build the dataset first (nanovla dataset build)")
    squares, goal_cube, goal_square = goal_references(metas, named_cube)
    return Demonstrations(JpegFrames(np.concatenate(blobs), np.asarray(offsets, np.int64)), np.concatenate(frame_index),
                          np.concatenate(states), np.concatenate(actions), np.concatenate(action_index),
                          np.concatenate(action_end), np.concatenate(episode), instructions, metas,
                          {c: JpegFrames(np.concatenate(extra_blobs[c]), np.asarray(extra_offsets[c], np.int64))
                           for c in extra}, np.concatenate(task_xy_m).astype(np.float32),
                          np.concatenate([np.full((len(s), 2 * (n_cubes or 0)), np.nan, np.float32) if c is None else c
                                          for c, s in zip(cubes_xy_m, states)]).astype(np.float32),
                          np.asarray(named_cube, np.int64), squares, goal_cube, goal_square)


SQUARE_QUERY_COLOURS = SQUARES  # the squares a goal query can point at, in a fixed order


def goal_references(metas: list[dict], named_cube: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per episode: its squares (E, S, 2) and where its instruction's goal is (see ``Demonstrations``)."""
    squares = np.full((len(metas), len(SQUARE_QUERY_COLOURS), 2), np.nan, np.float32)
    goal_cube, goal_square = np.full(len(metas), -1, np.int64), np.full(len(metas), -1, np.int64)
    for e, meta in enumerate(metas):
        known = meta.get("squares_xy_m") or {}
        for k, colour in enumerate(SQUARE_QUERY_COLOURS):
            if colour in known:
                squares[e, k] = known[colour]
        colours, kind, target = meta.get("cube_colours", []), meta.get("task_kind"), meta.get("target")
        if named_cube[e] < 0:
            continue
        if kind == "touch":
            goal_cube[e] = named_cube[e]
        elif kind == "stack" and target in colours:
            goal_cube[e] = colours.index(target)
        elif kind == "pick_place" and target in SQUARE_QUERY_COLOURS:
            goal_square[e] = SQUARE_QUERY_COLOURS.index(target)
    return squares, goal_cube, goal_square
