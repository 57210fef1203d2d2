"""LeRobot dataset format (v2.1, images in the parquet files), both ways.

Export: episode bags -> a LeRobot dataset at the control rate (one row per command the driver sent), with
LeRobot's SO-101 units: arm joints in degrees about the middle of the calibrated range (``use_degrees``),
the gripper on the 0-100 range scale; features ``observation.state``, ``action`` (names
``shoulder_pan.pos`` ...), ``observation.images.front`` (JPEG bytes), and the instruction as the task.
The arm's calibration is kept in ``meta/info.json`` so the conversion can be undone exactly.

Import: a LeRobot dataset in that layout (ours or recorded with LeRobot on an SO-101) -> our training shards,
so data recorded either way trains NanoVLA.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from nanovla_ros.data.demos import DatasetBuildConfig, DatasetError, encode_jpeg, bag_samples
from nanovla_ros.driver.calibration import ArmCalibration, MotorCalibration
from nanovla_ros.driver.config import SO101_JOINTS

CODEBASE_VERSION = "v2.1"
IMAGE_KEY = "observation.images.front"
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
CHUNKS_SIZE = 1000
MAX_RES = 4095  # LeRobot's scale for degrees (Feetech: 4096 ticks per turn, max value 4095)


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


def _stats(values: np.ndarray) -> dict:
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def export_lerobot(bags: str | Path, out_dir: str | Path, fps: int = 30, robot_type: str = "so101_follower",
                   include_failed: bool = False, progress: bool = True) -> dict:
    """Write a LeRobot v2.1 dataset from the finished bags under ``bags``; return a summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanovla_ros.recording.bags import BagError, list_bags, read_episode
    from nanovla_ros.data.demos import TOPICS

    out = Path(out_dir)
    if (out / "meta" / "info.json").exists():
        raise DatasetError(f"{str(out)!r} already holds a LeRobot dataset; choose a new folder")
    paths = list(list_bags(bags))
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="bags -> LeRobot", unit="bag")
    names = [f"{j}.pos" for j in SO101_JOINTS]
    tasks: dict[str, int] = {}
    episodes, stats_lines, skipped = [], [], {}
    calibration_text, index = None, 0
    for path in paths:
        try:
            bag = read_episode(path, list(TOPICS))
            if not include_failed and bag.metadata.get("task_success") != "true":
                skipped[path.name] = f"task_success={bag.metadata.get('task_success', 'missing')}"
                continue
            if "calibration" not in bag.metadata:
                raise DatasetError("no calibration in the bag's metadata (LeRobot units need it)")
            ep = bag_samples(bag, DatasetBuildConfig())
        except (BagError, DatasetError) as error:
            skipped[path.name] = str(error)
            continue
        calibration_text = calibration_text or bag.metadata["calibration"]
        calibration = ArmCalibration.from_json(bag.metadata["calibration"], SO101_JOINTS)
        e = len(episodes)
        n = len(ep["states"])
        task = tasks.setdefault(ep["instruction"], len(tasks))
        state = to_lerobot_units(ep["states"], calibration)
        action = to_lerobot_units(ep["actions"][ep["action_index"]], calibration)
        jpeg, offsets = encode_jpeg(ep["frames"], 95)
        images = [{"bytes": jpeg[offsets[f]:offsets[f + 1]].tobytes(), "path": None} for f in ep["frame_index"]]
        table = pa.table({
            "observation.state": pa.array(state.tolist(), pa.list_(pa.float32(), 6)),
            "action": pa.array(action.tolist(), pa.list_(pa.float32(), 6)),
            IMAGE_KEY: pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, e, np.int64)),
            "index": pa.array(np.arange(index, index + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, task, np.int64)),
        })
        target = out / DATA_PATH.format(episode_chunk=e // CHUNKS_SIZE, episode_index=e)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        frames = np.stack(ep["frames"]).astype(np.float32) / 255.0  # (F, h, w, 3)
        episodes.append({"episode_index": e, "tasks": [ep["instruction"]], "length": n})
        stats_lines.append({"episode_index": e, "stats": {
            "observation.state": _stats(state), "action": _stats(action),
            IMAGE_KEY: {k: np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else v
                        for k, v in _stats(frames.reshape(-1, 3)).items()},
            "timestamp": _stats(np.arange(n, dtype=np.float32)[:, None] / fps)}})
        index += n
    if not episodes:
        raise DatasetError(f"no usable episodes under {str(bags)!r}: {skipped}")
    meta = out / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    h, w = ep["frames"][0].shape[:2]
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes),
        "total_frames": index, "total_tasks": len(tasks), "total_videos": 0,
        "total_chunks": (len(episodes) - 1) // CHUNKS_SIZE + 1, "chunks_size": CHUNKS_SIZE, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": None,
        "features": {
            "observation.state": {"dtype": "float32", "shape": [6], "names": names},
            "action": {"dtype": "float32", "shape": [6], "names": names},
            IMAGE_KEY: {"dtype": "image", "shape": [h, w, 3], "names": ["height", "width", "channels"]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
        # Not LeRobot's: how to undo the units (arm joints: degrees; gripper: percent of its range).
        "nanovla_ros": {"units": "lerobot so101 use_degrees=True, gripper RANGE_0_100",
                        "calibration": json.loads(calibration_text)},
    }
    (meta / "info.json").write_text(json.dumps(info, indent=2))
    (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks.items()))
    (meta / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (meta / "episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats_lines))
    return {"episodes": len(episodes), "frames": index, "tasks": len(tasks), "skipped": skipped}


def import_lerobot(root: str | Path, out_dir: str | Path, calibration_file: str | None = None,
                   image_key: str = IMAGE_KEY, jpeg_quality: int = 90) -> dict:
    """LeRobot v2.x dataset (images in parquet) -> training shards under ``out_dir/shards``."""
    import pyarrow.parquet as pq
    from PIL import Image

    root = Path(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    if image_key not in info["features"] or info["features"][image_key]["dtype"] != "image":
        raise DatasetError(f"{str(root)!r}: feature {image_key!r} is missing or not stored as images "
                           f"(video-backed datasets are not read yet)")
    if calibration_file:
        calibration = ArmCalibration.load(calibration_file, SO101_JOINTS)
    elif "nanovla_ros" in info:
        calibration = ArmCalibration.from_json(json.dumps(info["nanovla_ros"]["calibration"]), SO101_JOINTS)
    else:
        raise DatasetError("the dataset's units need the arm's calibration: pass the LeRobot calibration file")
    tasks = {}
    for line in (root / "meta" / "tasks.jsonl").read_text().splitlines():
        entry = json.loads(line)
        tasks[entry["task_index"]] = entry["task"]
    shards = Path(out_dir) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(path).to_pydict()
        frames = [np.asarray(Image.open(io.BytesIO(img["bytes"])).convert("RGB")) for img in table[image_key]]
        jpeg, offsets = encode_jpeg(frames, jpeg_quality)
        n = len(frames)
        state = from_lerobot_units(np.asarray(table["observation.state"], np.float32), calibration)
        action = from_lerobot_units(np.asarray(table["action"], np.float32), calibration)
        instruction = tasks[int(table["task_index"][0])]
        np.savez(shards / f"lerobot_{path.stem}.npz", jpeg=jpeg, jpeg_offsets=offsets,
                 frame_index=np.arange(n, dtype=np.int64), states=state, actions=action,
                 action_index=np.arange(n, dtype=np.int64),
                 meta=np.array(json.dumps({"instruction": instruction, "source": f"lerobot:{root.name}/{path.name}"})))
        count += 1
    return {"episodes": count}
