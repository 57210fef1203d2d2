#!/usr/bin/env python3
"""Run by the real ``lerobot`` package's Python (its own venv, `scripts/lerobot/setup_venv.sh`): opens a dataset
with ``LeRobotDataset`` as a LeRobot user would (metadata, every frame through ``__getitem__``, videos decoded
by lerobot's own decoder) and prints what it found as one JSON object, for our export's checks.

    lerobot_load.py DATASET_DIR
"""
import json
import sys


def main() -> None:
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("local/nanovla_export", root=sys.argv[1], video_backend="pyav")
    meta = dataset.meta
    cameras = list(meta.camera_keys)
    episodes = []
    for e in range(meta.total_episodes):
        start = int(meta.episodes[e]["dataset_from_index"])
        end = int(meta.episodes[e]["dataset_to_index"])
        first, last = dataset[start], dataset[end - 1]
        episodes.append({
            "task": first["task"], "length": end - start, "episode_index": int(first["episode_index"]),
            "first_state": first["observation.state"].tolist(), "last_action": last["action"].tolist(),
            # (3, H, W) float in [0, 1] -> the frame's mean RGB in 0-255
            "colours": {c: (first[c].mean(dim=(1, 2)) * 255).tolist() for c in cameras},
            "shapes": {c: list(first[c].shape) for c in cameras}})
    for i in range(len(dataset)):  # every frame loads (a LeRobot training loop reads them all)
        dataset[i]
    print(json.dumps({
        "codebase_version": meta.info.codebase_version if hasattr(meta.info, "codebase_version") else None,
        "total_episodes": meta.total_episodes, "total_frames": meta.total_frames, "fps": meta.fps,
        "robot_type": meta.robot_type, "cameras": cameras, "frames_read": len(dataset),
        "stats_keys": {k: sorted(v) for k, v in meta.stats.items()},
        "state_names": meta.features["observation.state"]["names"],
        "state_q99": np.asarray(meta.stats["observation.state"]["q99"]).tolist(),
        "episodes": episodes}))


if __name__ == "__main__":
    main()
