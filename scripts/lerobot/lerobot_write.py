#!/usr/bin/env python3
"""Run by the real ``lerobot`` package's Python (its own venv, `scripts/lerobot/setup_venv.sh`): writes a small
SO-101 dataset with LeRobot's own writer (``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize``), as ``lerobot-record`` would with an SO-101 follower and two cameras, so that our importer is
checked against what lerobot itself writes.

    lerobot_write.py OUT [--episodes 3] [--frames 40] [--images] [--size 96 128]

The joints move on known ramps (degrees; gripper 0-100) and each camera shows a colour that changes with the
episode: ``expected.json`` beside the dataset says what an importer must find.
"""
import argparse
import json
from pathlib import Path

import numpy as np

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
TASKS = ("put the red cube in the yellow square", "touch the blue cube")
COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))


def state_of(episode: int, frame: int) -> np.ndarray:
    arm = [10.0 * (j + 1) * (-1) ** episode + 0.5 * frame for j in range(5)]
    return np.array(arm + [min(100.0, 20.0 + episode * 10 + frame)], np.float32)


def main() -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--images", action="store_true", help="store frames as images, not videos")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    args = parser.parse_args()
    h, w = args.size
    names = [f"{j}.pos" for j in JOINTS]
    kind = "image" if args.images else "video"
    features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": names},
                "action": {"dtype": "float32", "shape": (6,), "names": names},
                "observation.images.front": {"dtype": kind, "shape": (h, w, 3),
                                             "names": ["height", "width", "channels"]},
                "observation.images.wrist": {"dtype": kind, "shape": (h, w, 3),
                                             "names": ["height", "width", "channels"]}}
    dataset = LeRobotDataset.create("local/so101_reference", fps=30, features=features, root=args.out,
                                    robot_type="so101_follower", use_videos=not args.images)
    expected = []
    for e in range(args.episodes):
        task = TASKS[e % len(TASKS)]
        for f in range(args.frames):
            state = state_of(e, f)
            dataset.add_frame({"observation.state": state, "action": state_of(e, f + 1),
                               "observation.images.front": np.full((h, w, 3), COLOURS[e % 4], np.uint8),
                               "observation.images.wrist": np.full((h, w, 3), COLOURS[(e + 1) % 4], np.uint8),
                               "task": task})
        dataset.save_episode()
        expected.append({"task": task, "frames": args.frames, "first_state": state_of(e, 0).tolist(),
                         "last_action": state_of(e, args.frames).tolist(), "front": COLOURS[e % 4],
                         "wrist": COLOURS[(e + 1) % 4]})
    dataset.finalize()
    (Path(args.out).parent / f"{Path(args.out).name}.expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main()
