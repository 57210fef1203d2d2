"""LeRobot datasets, both ways: format v3.0 (what lerobot 0.4 and later write and read), and v2.1 on import.

Export: episode bags -> a LeRobot v3.0 dataset at the control rate (one row per command the driver sent), in
LeRobot's SO-101 units: arm joints in degrees about the middle of the calibrated range (``use_degrees``), the
gripper 0-100 over its calibrated range, every reading bounded to that range as LeRobot's motor bus bounds it.
Features ``observation.state`` and ``action`` (names ``shoulder_pan.pos`` ...), one ``observation.images.<camera>``
per recorded camera (front, wrist) as AV1 videos the way lerobot encodes them (libsvtav1, yuv420p, GOP 2, CRF 30)
or as PNG images in the parquet files, and the instruction as the task. Stats carry LeRobot's quantiles. The
arm's calibration goes to ``meta/calibration.json`` (LeRobot's calibration file format), so the units can be
undone exactly.

Import: a LeRobot dataset (v3.0 with videos or images, or v2.1 with images; ours or recorded with LeRobot on an
SO-101) -> our training shards, one per episode, so data recorded either way trains NanoVLA.

Layout, v3.0 (``meta/info.json`` names the paths): ``data/chunk-XXX/file-XXX.parquet`` (rows of many episodes),
``videos/<key>/chunk-XXX/file-XXX.mp4`` (many episodes one after another; an episode's span is given by
``from_timestamp`` / ``to_timestamp`` in its metadata), ``meta/episodes/chunk-XXX/file-XXX.parquet`` (one row per
episode: tasks, length, row span, file indices, per-episode stats), ``meta/tasks.parquet``, ``meta/stats.json``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np

from nanovla_ros.data.demos import DatasetBuildConfig, DatasetError, bag_samples, encode_jpeg
from nanovla_ros.driver.calibration import ArmCalibration, MotorCalibration
from nanovla_ros.driver.config import SO101_JOINTS

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100  # a data / video file is closed once it passes this size (LeRobot's defaults)
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CALIBRATION_PATH = "meta/calibration.json"  # ours; LeRobot ignores it
IMAGE_KEY = "observation.images.{camera}"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# How lerobot encodes camera streams (its VideoEncoderConfig defaults), recorded in info.json as it records them
VIDEO_CODEC, VIDEO_PIX_FMT, VIDEO_GOP, VIDEO_CRF, VIDEO_PRESET = "libsvtav1", "yuv420p", 2, 30, 12
MAX_RES = 4095  # LeRobot's scale for degrees (Feetech: 4096 ticks per turn, max value 4095)
IMAGE_STATS_FRAMES = 100  # frames per episode and camera that image stats sample, each downsampled to <= 150 px


# --------------------------------------------------------------------------- units
def _ticks(m: MotorCalibration, rad: np.ndarray) -> np.ndarray:
    """Raw ticks of ``rad``, bounded to the calibrated range as LeRobot bounds every reading it normalises
    (``MotorsBus._normalize``): what its SO-101 follower would report for the same arm."""
    ticks = m.mid_ticks + (-1.0 if m.drive_mode else 1.0) * rad * 4096 / (2 * math.pi)
    return np.clip(ticks, m.range_min, m.range_max)


def to_lerobot_units(values_rad: np.ndarray, calibration: ArmCalibration, joints=SO101_JOINTS) -> np.ndarray:
    """(N, 6) radians -> LeRobot SO-101 units (degrees about mid-range; gripper 0-100), each reading bounded to the
    joint's calibrated range first, as LeRobot does (the gripper stays within 0-100)."""
    out = np.empty_like(values_rad, dtype=np.float64)
    for j, name in enumerate(joints):
        m = calibration.motors[name]
        ticks = _ticks(m, values_rad[:, j])
        if name == "gripper":
            out[:, j] = 100.0 * (ticks - m.range_min) / (m.range_max - m.range_min)
        else:
            out[:, j] = (-1.0 if m.drive_mode else 1.0) * (ticks - m.mid_ticks) * 360.0 / MAX_RES
    return out.astype(np.float32)


def from_lerobot_units(values: np.ndarray, calibration: ArmCalibration, joints=SO101_JOINTS) -> np.ndarray:
    out = np.empty_like(values, dtype=np.float64)
    for j, name in enumerate(joints):
        m = calibration.motors[name]
        if name == "gripper":
            ticks = m.range_min + values[:, j] / 100.0 * (m.range_max - m.range_min)
            out[:, j] = (-1.0 if m.drive_mode else 1.0) * (ticks - m.mid_ticks) * 2 * math.pi / 4096
        else:
            out[:, j] = values[:, j] * MAX_RES / 360.0 * 2 * math.pi / 4096
    return out.astype(np.float32)


# --------------------------------------------------------------------------- stats
def feature_stats(values: np.ndarray) -> dict:
    """LeRobot's per-feature stats of (N, D) values: min, max, mean, std, count and the quantiles q01 ... q99."""
    values = np.asarray(values, np.float64).reshape(len(values), -1)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    stats.update({name: np.quantile(values, q, axis=0) for name, q in QUANTILES.items()})
    return stats


def image_stats(frames: list[np.ndarray]) -> dict:
    """LeRobot's stats of a camera: per channel, values in [0, 1], shaped (3, 1, 1), from at most
    IMAGE_STATS_FRAMES frames spread over the episode, each downsampled (as lerobot samples them)."""
    import cv2

    picks = np.linspace(0, len(frames) - 1, min(len(frames), IMAGE_STATS_FRAMES)).round().astype(int)
    pixels = []
    for i in picks:
        frame = frames[i]
        scale = 150 / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pixels.append(frame.reshape(-1, 3))
    stats = feature_stats(np.concatenate(pixels).astype(np.float32) / 255.0)
    return {k: v if k == "count" else v.reshape(3, 1, 1) for k, v in {**stats, "count": np.array([len(frames)])}.items()}


def merge_stats(parts: list[dict]) -> dict:
    """Dataset stats from per-episode stats (LeRobot's aggregation): min / max over episodes, mean and std pooled by
    count, quantiles averaged weighted by count."""
    counts = np.array([float(p["count"][0]) for p in parts])
    w = counts / counts.sum()
    shape = np.asarray(parts[0]["mean"]).shape
    mean = sum(wi * np.asarray(p["mean"]) for wi, p in zip(w, parts, strict=True))
    var = sum(wi * (np.asarray(p["std"]) ** 2 + (np.asarray(p["mean"]) - mean) ** 2) for wi, p in zip(w, parts, strict=True))
    out = {"min": np.min([p["min"] for p in parts], axis=0), "max": np.max([p["max"] for p in parts], axis=0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
    out.update({q: sum(wi * np.asarray(p[q]) for wi, p in zip(w, parts, strict=True)).reshape(shape) for q in QUANTILES})
    return out


def _jsonable(stats: dict) -> dict:
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}


# --------------------------------------------------------------------------- export
@contextlib.contextmanager
def _keeping_scheduling():
    """SVT-AV1 raises the thread that calls it to real-time SCHED_FIFO where it may (as root). A process that then
    starts others (the launcher's nodes, torch's thread pools) passes that on, and busy-waiting threads at FIFO
    priority starve a small machine; so the thread's policy is put back after every call into the encoder."""
    try:
        saved = os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):  # no such calls on this platform
        saved = None
    try:
        yield
    finally:
        if saved is not None and (os.sched_getscheduler(0), os.sched_getparam(0)) != saved:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, *saved)


class _VideoFile:
    """One camera's current mp4 file: episodes appended one after another (AV1 as lerobot encodes)."""

    def __init__(self, path: Path, fps: int, height: int, width: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.frames = path, fps, 0
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(VIDEO_CODEC, rate=fps, options={
            "g": str(VIDEO_GOP), "crf": str(VIDEO_CRF), "preset": str(VIDEO_PRESET)})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, VIDEO_PIX_FMT

    def append(self, frames: list[np.ndarray]) -> tuple[float, float]:
        """Encodes ``frames`` (RGB) after what the file holds; returns the episode's (from, to) timestamps, s."""
        import av

        start = self.frames
        with _keeping_scheduling():
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                picture.pts = self.frames
                self.frames += 1
                self.container.mux(self.stream.encode(picture))
        return start / self.fps, self.frames / self.fps

    def close(self) -> None:
        with _keeping_scheduling():
            self.container.mux(self.stream.encode(None))
            self.container.close()

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20 if self.path.exists() else 0.0


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= CHUNKS_SIZE else (chunk, file + 1)


def _write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as lerobot writes it: a pandas frame indexed by the task string (pandas metadata kept, so
    ``pd.read_parquet`` gives lerobot its index) with a ``task_index`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {"index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None,
                   "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
                   "pandas_version": "2.3.3"}
    ordered = sorted(tasks.items(), key=lambda item: item[1])
    table = pa.table({"task_index": pa.array([i for _, i in ordered], pa.int64()),
                      "task": pa.array([t for t, _ in ordered], pa.string())})
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def _read_tasks(root: Path) -> dict[int, str]:
    import pyarrow.parquet as pq

    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        raise DatasetError(f"{str(root)!r}: no meta/tasks.parquet (a LeRobot v3.0 dataset has one)")
    table = pq.read_table(path).to_pydict()
    task_column = next((c for c in ("task", "__index_level_0__") if c in table), None)
    if task_column is None or "task_index" not in table:
        raise DatasetError(f"{str(path)!r}: expected columns task and task_index, found {sorted(table)}")
    return {int(i): str(t) for i, t in zip(table["task_index"], table[task_column], strict=True)}


def export_lerobot(bags: str | Path, out_dir: str | Path, fps: int = 30, robot_type: str = "so101_follower",
                   include_failed: bool = False, videos: bool = True, progress: bool = True) -> dict:
    """Write a LeRobot v3.0 dataset from the finished bags under ``bags``; return a summary. ``videos``: camera
    streams as AV1 mp4 files (lerobot's default), else PNG images inside the parquet files."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanovla_ros.data.demos import TOPICS
    from nanovla_ros.recording.bags import BagError, list_bags, read_episode

    out = Path(out_dir)
    if (out / "meta" / "info.json").exists():
        raise DatasetError(f"{str(out)!r} already holds a LeRobot dataset; choose a new folder")
    if videos:
        try:
            import av  # noqa: F401
        except ImportError as error:
            raise DatasetError("video export needs PyAV (pip install av); or export images (--lerobot-images)") \
                from error
    paths = list(list_bags(bags))
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="bags -> LeRobot", unit="bag")
    names = [f"{j}.pos" for j in SO101_JOINTS]
    tasks: dict[str, int] = {}
    episodes: list[dict] = []
    episode_stats: list[dict] = []
    skipped: dict[str, str] = {}
    calibration_text, cameras, shape = None, None, None
    data_at, data_rows, data_bytes = (0, 0), [], 0  # the current data file and what it will hold
    video_files: dict[str, _VideoFile] = {}
    video_at: dict[str, tuple[int, int]] = {}
    index = 0

    def flush_data() -> None:
        nonlocal data_rows, data_bytes, data_at
        if data_rows:
            target = out / DATA_PATH.format(chunk_index=data_at[0], file_index=data_at[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(data_rows), target)
            data_rows, data_bytes, data_at = [], 0, _next_file(*data_at)

    for path in paths:
        try:
            bag = read_episode(path, list(TOPICS))
            if not include_failed and bag.metadata.get("task_success") != "true":
                skipped[path.name] = f"task_success={bag.metadata.get('task_success', 'missing')}"
                continue
            if "calibration" not in bag.metadata:
                raise DatasetError("no calibration in the bag's metadata (LeRobot units need it)")
            ep = bag_samples(bag, DatasetBuildConfig())
            ep_cameras = ["front", *sorted(ep["camera_frames"])]
            if cameras is not None and (ep_cameras != cameras or ep["frames"][0].shape != shape):
                raise DatasetError(f"cameras {ep_cameras} of shape {ep['frames'][0].shape}, the dataset's first "
                                   f"episode has {cameras} of {shape}: one dataset holds one camera set")
        except (BagError, DatasetError) as error:
            skipped[path.name] = str(error)
            continue
        cameras, shape = ep_cameras, ep["frames"][0].shape
        calibration_text = calibration_text or bag.metadata["calibration"]
        calibration = ArmCalibration.from_json(bag.metadata["calibration"], SO101_JOINTS)
        e, n = len(episodes), len(ep["states"])
        task = tasks.setdefault(ep["instruction"], len(tasks))
        state = to_lerobot_units(ep["states"], calibration)
        action = to_lerobot_units(ep["actions"][ep["action_index"]], calibration)
        # one frame per row: each command's newest frame of each camera (frames repeat where a camera is slower)
        rows_frames = {c: [(ep["frames"] if c == "front" else ep["camera_frames"][c])[f] for f in ep["frame_index"]]
                       for c in cameras}
        columns = {"observation.state": pa.array(state.tolist(), pa.list_(pa.float32(), 6)),
                   "action": pa.array(action.tolist(), pa.list_(pa.float32(), 6))}
        if not videos:
            for c in cameras:
                pngs = [cv2.imencode(".png", f[..., ::-1])[1].tobytes() for f in rows_frames[c]]
                columns[IMAGE_KEY.format(camera=c)] = pa.array(
                    [{"bytes": b, "path": f"frame-{i:06d}.png"} for i, b in enumerate(pngs)],
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        timestamp = np.arange(n, dtype=np.float32) / fps
        columns.update({"timestamp": pa.array(timestamp), "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                        "episode_index": pa.array(np.full(n, e, np.int64)),
                        "index": pa.array(np.arange(index, index + n, dtype=np.int64)),
                        "task_index": pa.array(np.full(n, task, np.int64))})
        table = pa.table(columns)
        if data_rows and data_bytes + table.nbytes > DATA_FILE_MB * 2**20:
            flush_data()
        record = {"episode_index": e, "tasks": [ep["instruction"]], "length": n,
                  "data/chunk_index": data_at[0], "data/file_index": data_at[1],
                  "dataset_from_index": index, "dataset_to_index": index + n}
        data_rows.append(table)
        data_bytes += table.nbytes
        if videos:
            for c in cameras:
                key = IMAGE_KEY.format(camera=c)
                if key in video_files and video_files[key].size_mb > VIDEO_FILE_MB:
                    video_files.pop(key).close()
                    video_at[key] = _next_file(*video_at[key])
                if key not in video_files:
                    chunk, file = video_at.setdefault(key, (0, 0))
                    video_files[key] = _VideoFile(out / VIDEO_PATH.format(video_key=key, chunk_index=chunk,
                                                                          file_index=file), fps, *shape[:2])
                start_s, end_s = video_files[key].append(rows_frames[c])
                record.update({f"videos/{key}/chunk_index": video_at[key][0],
                               f"videos/{key}/file_index": video_at[key][1],
                               f"videos/{key}/from_timestamp": start_s, f"videos/{key}/to_timestamp": end_s})
        stats = {"observation.state": feature_stats(state), "action": feature_stats(action),
                 **{IMAGE_KEY.format(camera=c): image_stats(rows_frames[c]) for c in cameras},
                 "timestamp": feature_stats(timestamp[:, None]),
                 "frame_index": feature_stats(np.arange(n)[:, None]),
                 "episode_index": feature_stats(np.full((n, 1), e)),
                 "index": feature_stats(np.arange(index, index + n)[:, None]),
                 "task_index": feature_stats(np.full((n, 1), task))}
        record.update({f"stats/{feature}/{k}": np.asarray(v).tolist() for feature, s in stats.items()
                       for k, v in s.items()})
        record.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        episodes.append(record)
        episode_stats.append(stats)
        index += n
    flush_data()
    for video in video_files.values():
        video.close()
    if not episodes:
        raise DatasetError(f"no usable episodes under {str(bags)!r}: {skipped}")
    meta = out / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), out / EPISODES_PATH.format(chunk_index=0, file_index=0))
    _write_tasks(meta / "tasks.parquet", tasks)
    stats = {feature: merge_stats([s[feature] for s in episode_stats]) for feature in episode_stats[0]}
    (meta / "stats.json").write_text(json.dumps(_jsonable(stats), indent=2))
    h, w = shape[:2]
    image_features = {}
    for c in cameras:
        feature = {"dtype": "video" if videos else "image", "shape": [h, w, 3],
                   "names": ["height", "width", "channels"]}
        if videos:
            feature["info"] = {"video.height": h, "video.width": w, "video.codec": "av1",
                               "video.pix_fmt": VIDEO_PIX_FMT, "video.fps": fps, "video.channels": 3,
                               "has_audio": False, "video.g": VIDEO_GOP, "video.crf": VIDEO_CRF,
                               "video.preset": VIDEO_PRESET, "video.fast_decode": 0, "video.video_backend": "pyav",
                               "video.extra_options": {}, "is_depth_map": False}
        image_features[IMAGE_KEY.format(camera=c)] = feature
    info = {
        "codebase_version": CODEBASE_VERSION, "fps": fps,
        "features": {
            "observation.state": {"dtype": "float32", "shape": [6], "names": names},
            "action": {"dtype": "float32", "shape": [6], "names": names},
            **image_features,
            **{k: {"dtype": t, "shape": [1], "names": None} for k, t in (
                ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                ("index", "int64"), ("task_index", "int64"))}},
        "total_episodes": len(episodes), "total_frames": index, "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if videos else None, "robot_type": robot_type,
        "splits": {"train": f"0:{len(episodes)}"},
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    (out / CALIBRATION_PATH).write_text(calibration_text)  # how to undo the units (LeRobot's calibration format)
    return {"episodes": len(episodes), "frames": index, "tasks": len(tasks), "cameras": cameras,
            "videos": videos, "skipped": skipped}


# --------------------------------------------------------------------------- import
def _calibration_of(root: Path, info: dict, calibration_file: str | None) -> ArmCalibration:
    if calibration_file:
        return ArmCalibration.load(calibration_file, SO101_JOINTS)
    if (root / CALIBRATION_PATH).is_file():
        return ArmCalibration.from_json((root / CALIBRATION_PATH).read_text(), SO101_JOINTS)
    if "nanovla_ros" in info:  # v2.1 exports of ours kept it in info.json
        return ArmCalibration.from_json(json.dumps(info["nanovla_ros"]["calibration"]), SO101_JOINTS)
    raise DatasetError("the dataset's units need the arm's calibration: pass the follower's LeRobot calibration "
                       "file (--calibration, e.g. ~/.cache/huggingface/lerobot/calibration/robots/so101_follower/"
                       "<id>.json)")


def _camera_keys(info: dict, cameras: dict[str, str] | None) -> dict[str, str]:
    """Our camera name -> the dataset's feature key: ``cameras`` if given, else observation.images.front / .wrist
    where present, else the dataset's first camera as front."""
    features = info["features"]
    visual = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
    if cameras:
        missing = {ours: key for ours, key in cameras.items() if key not in visual}
        if missing:
            raise DatasetError(f"camera features {missing} are not in the dataset; it has {visual}")
        if "front" not in cameras:
            raise DatasetError("the camera mapping needs a 'front' camera (front=<feature key>)")
        return dict(cameras)
    found = {c: IMAGE_KEY.format(camera=c) for c in ("front", "wrist") if IMAGE_KEY.format(camera=c) in visual}
    if "front" not in found:
        if not visual:
            raise DatasetError("the dataset has no camera features (image or video)")
        found = {"front": visual[0]}
    return found


def _decode_image(cell: dict, root: Path) -> np.ndarray:
    import cv2

    data = cell.get("bytes")
    if not data:
        path = root / cell["path"] if cell.get("path") else None
        if path is None or not path.is_file():
            raise DatasetError(f"image cell with neither bytes nor a readable path: {cell.get('path')!r}")
        data = path.read_bytes()
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise DatasetError("an image cell could not be decoded")
    return frame[..., ::-1]


class _VideoReader:
    """Frames of one mp4 by timestamp, decoded forward from the keyframe before each request."""

    def __init__(self, path: Path) -> None:
        import av

        if not path.is_file():
            raise DatasetError(f"video file {str(path)!r} is missing")
        self.path = path
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]

    def frames(self, timestamps_s: np.ndarray, tolerance_s: float) -> list[np.ndarray]:
        """The frame at each timestamp (s, ascending), each within ``tolerance_s`` of it, else DatasetError."""
        tb = float(self.stream.time_base)
        self.container.seek(max(0, int(timestamps_s[0] / tb)), stream=self.stream, backward=True)
        out: list[np.ndarray] = []
        for frame in self.container.decode(self.stream):
            t = frame.pts * tb
            if t < timestamps_s[len(out)] - tolerance_s:
                continue  # before the episode (decoded from the keyframe on)
            if t > timestamps_s[len(out)] + tolerance_s:
                raise DatasetError(f"{self.path.name}: no frame within {tolerance_s * 1e3:.0f} ms of "
                                   f"t={timestamps_s[len(out)]:.3f} s")
            image = frame.to_ndarray(format="rgb24")
            while len(out) < len(timestamps_s) and abs(t - timestamps_s[len(out)]) <= tolerance_s:
                out.append(image)
            if len(out) == len(timestamps_s):
                return out
        raise DatasetError(f"{self.path.name}: the video ends before t={timestamps_s[len(out)]:.3f} s")

    def close(self) -> None:
        self.container.close()


def _write_episode_shard(shards: Path, name: str, frames: dict[str, list[np.ndarray]], state: np.ndarray,
                         action: np.ndarray, instruction: str, source: str, jpeg_quality: int) -> None:
    jpeg, offsets = encode_jpeg(frames["front"], jpeg_quality)
    extra = {}
    for camera, camera_frames in frames.items():
        if camera != "front":
            extra[f"jpeg_{camera}"], extra[f"jpeg_offsets_{camera}"] = encode_jpeg(camera_frames, jpeg_quality)
    n = len(state)
    tmp = shards / f"{name}.partial.npz"
    np.savez(tmp, jpeg=jpeg, jpeg_offsets=offsets, **extra, frame_index=np.arange(n, dtype=np.int64),
             states=state, actions=action, action_index=np.arange(n, dtype=np.int64),
             meta=np.array(json.dumps({"instruction": instruction, "source": source})))
    tmp.replace(shards / f"{name}.npz")


def iter_lerobot_episodes(root: str | Path, calibration_file: str | None = None, cameras: dict[str, str] | None = None,
                          episodes: list[int] | None = None, progress: bool = False):
    """Each episode of a LeRobot dataset (v3.0 with videos or images, v2.1 with images) as a dict: ``index``,
    ``task``, ``frames`` {our camera: [RGB (h, w, 3)]}, ``states`` and ``actions`` (N, 6) radians, ``timestamps``
    (N,) s, ``fps``. ``episodes``: only those indices. ``cameras``: our camera name -> the dataset's feature key
    (default: front / wrist)."""
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{str(root)!r} is not a LeRobot dataset (no meta/info.json)")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", ""))
    keys = _camera_keys(info, cameras)
    if version.startswith("v2"):
        rows = _rows_v2(root, info, keys)
    elif version == CODEBASE_VERSION:
        rows = _rows_v3(root, info, keys, episodes, progress)
    else:
        raise DatasetError(f"{str(root)!r}: LeRobot dataset format {version!r}; this reads v3.0 and v2.1")
    calibration = _calibration_of(root, info, calibration_file)
    for episode in rows:
        if episodes is not None and episode["index"] not in episodes:
            continue
        yield {**episode, "states": from_lerobot_units(episode["states"], calibration),
               "actions": from_lerobot_units(episode["actions"], calibration), "fps": float(info["fps"]),
               "cameras": keys, "format": version}


def import_lerobot(root: str | Path, out_dir: str | Path, calibration_file: str | None = None,
                   cameras: dict[str, str] | None = None, jpeg_quality: int = 90, progress: bool = False) -> dict:
    """A LeRobot dataset (v3.0 with videos or images, v2.1 with images) -> one training shard per episode under
    ``out_dir/shards``. ``cameras``: our camera name -> the dataset's feature key (default: front / wrist)."""
    root = Path(root)
    shards = Path(out_dir) / "shards"
    count, keys, version = 0, {}, ""
    for episode in iter_lerobot_episodes(root, calibration_file, cameras, progress=progress):
        shards.mkdir(parents=True, exist_ok=True)
        e = episode["index"]
        _write_episode_shard(shards, f"lerobot_{root.name}_episode_{e:06d}", episode["frames"], episode["states"],
                             episode["actions"], episode["task"], f"lerobot:{root.name}/episode {e}", jpeg_quality)
        count, keys, version = count + 1, episode["cameras"], episode["format"]
    return {"episodes": count, "cameras": keys, "format": version}


def _rows_v3(root: Path, info: dict, keys: dict[str, str], only: list[int] | None, progress: bool):
    """v3.0 episodes in LeRobot's units: data files hold many episodes, video files many episodes in a row."""
    import pyarrow.parquet as pq

    tasks = _read_tasks(root)
    episode_files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not episode_files:
        raise DatasetError(f"{str(root)!r}: no meta/episodes/*.parquet")
    wanted = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index", "dataset_from_index",
              "dataset_to_index"]
    video_keys = [k for k in keys.values() if info["features"][k]["dtype"] == "video"]
    for key in video_keys:
        wanted += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    episodes = []
    for f in episode_files:
        table = pq.read_table(f)
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise DatasetError(f"{str(f)!r}: episode metadata lacks {missing}")
        episodes += table.select(wanted).to_pylist()
    episodes.sort(key=lambda r: r["episode_index"])
    if only is not None:
        episodes = [ep for ep in episodes if ep["episode_index"] in only]
    fps = float(info["fps"])
    image_keys = [k for k in keys.values() if info["features"][k]["dtype"] == "image"]
    data_columns = ["observation.state", "action", "timestamp", "episode_index", "frame_index", "task_index",
                    *image_keys]
    data_cache: dict[tuple[int, int], dict] = {}
    videos: dict[str, _VideoReader] = {}
    iterator = episodes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(episodes, desc="LeRobot episodes", unit="episode")
    try:
        for ep in iterator:
            at = (ep["data/chunk_index"], ep["data/file_index"])
            if at not in data_cache:
                data_cache.clear()  # episodes are stored in order: one data file open at a time
                path = root / info["data_path"].format(chunk_index=at[0], file_index=at[1])
                if not path.is_file():
                    raise DatasetError(f"data file {str(path)!r} is missing")
                data_cache[at] = pq.read_table(path, columns=data_columns).to_pydict()
            table = data_cache[at]
            e = ep["episode_index"]
            rows = [i for i, x in enumerate(table["episode_index"]) if x == e]
            if len(rows) != ep["length"]:
                raise DatasetError(f"episode {e}: {len(rows)} rows in its data file, its metadata says "
                                   f"{ep['length']}")
            rows.sort(key=lambda i: table["frame_index"][i])
            timestamps = np.array([table["timestamp"][i] for i in rows], np.float64)
            frames = {}
            for ours, key in keys.items():
                if key in image_keys:
                    frames[ours] = [_decode_image(table[key][i], root) for i in rows]
                    continue
                video_at = (ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"])
                path = root / info["video_path"].format(video_key=key, chunk_index=video_at[0],
                                                        file_index=video_at[1])
                if key not in videos or videos[key].path != path:
                    if key in videos:
                        videos[key].close()
                    videos[key] = _VideoReader(path)
                frames[ours] = videos[key].frames(ep[f"videos/{key}/from_timestamp"] + timestamps,
                                                  tolerance_s=0.5 / fps)
            task_indices = {table["task_index"][i] for i in rows}
            task = tasks[int(table["task_index"][rows[0]])] if len(task_indices) == 1 else ep["tasks"][0]
            yield {"index": e, "task": task, "frames": frames, "timestamps": timestamps,
                   "states": np.asarray([table["observation.state"][i] for i in rows], np.float32),
                   "actions": np.asarray([table["action"][i] for i in rows], np.float32)}
    finally:
        for video in videos.values():
            video.close()


def _rows_v2(root: Path, info: dict, keys: dict[str, str]):
    """v2.1 episodes in LeRobot's units: one parquet file per episode, images inside, tasks in meta/tasks.jsonl."""
    import pyarrow.parquet as pq

    for key in keys.values():
        if info["features"][key]["dtype"] != "image":
            raise DatasetError(f"{str(root)!r}: v2.1 camera {key!r} is stored as video; convert the dataset to v3.0 "
                               "with lerobot's converter, or store images")
    tasks_path = root / "meta" / "tasks.jsonl"
    if not tasks_path.is_file():
        raise DatasetError(f"{str(root)!r}: no meta/tasks.jsonl (a LeRobot v2.1 dataset has one)")
    tasks = {}
    for line in tasks_path.read_text().splitlines():
        entry = json.loads(line)
        tasks[entry["task_index"]] = entry["task"]
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path).to_pydict()
        for e in sorted(set(table["episode_index"])):  # one episode a file, but never assume it
            rows = sorted((i for i, x in enumerate(table["episode_index"]) if x == e),
                          key=lambda i: table["frame_index"][i])
            fps = float(info["fps"])
            yield {"index": e, "task": tasks[int(table["task_index"][rows[0]])],
                   "frames": {ours: [_decode_image(table[key][i], root) for i in rows] for ours, key in keys.items()},
                   "timestamps": np.array([table["timestamp"][i] if "timestamp" in table else
                                           table["frame_index"][i] / fps for i in rows], np.float64),
                   "states": np.asarray([table["observation.state"][i] for i in rows], np.float32),
                   "actions": np.asarray([table["action"][i] for i in rows], np.float32)}
