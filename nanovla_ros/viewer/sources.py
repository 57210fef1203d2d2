"""Recorded sources for the viewer (no ROS imports): an episode bag (rosbag2 MCAP, as the recorder writes it) or a
LeRobot dataset's episode, replayed into a ``ViewerLog`` on the recording's own clock."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nanovla_ros.viewer.log import ViewerLog

CAMERA_TOPICS = {"camera/image_raw": "front", "wrist_camera/image_raw": "wrist"}
BAG_TOPICS = (*CAMERA_TOPICS, "joint_states", "joint_commands", "action_chunk", "current_task", "route_decision",
              "workcell/episode")


class ViewerSourceError(ValueError):
    """A path the viewer cannot show; the message says why."""


def find_bag(path: str | Path, episode: int | None = None) -> Path:
    """``path`` itself if it is a finished bag, else its ``episode``-th bag (sorted by name; default the last)."""
    from nanovla_ros.recording.bags import list_bags

    path = Path(path)
    if (path / "metadata.yaml").is_file():
        return path
    bags = sorted(list_bags(path))
    if not bags:
        raise ViewerSourceError(f"{str(path)!r} holds no finished episode bag")
    if episode is None:
        return bags[-1]
    if not 0 <= episode < len(bags):
        raise ViewerSourceError(f"episode {episode}: {str(path)!r} holds {len(bags)} bags (0-{len(bags) - 1})")
    return bags[episode]


def log_bag(log: ViewerLog, bag_path: str | Path) -> dict:
    """Every message of one episode bag into ``log``, on the bag's receive clock (s from its start)."""
    from nanovla_ros.camera.image_codec import ImageFields, fields_to_array
    from nanovla_ros.recording.bags import read_episode

    bag = read_episode(bag_path, list(BAG_TOPICS))
    events = sorted(((t, topic, msg) for topic, messages in bag.messages.items() for t, msg in messages),
                    key=lambda e: e[0])
    if not events:
        raise ViewerSourceError(f"{str(bag_path)!r} holds none of the topics the viewer shows: {list(BAG_TOPICS)}")
    start = bag.start_ns
    for t_ns, topic, msg in events:
        t = (t_ns - start) / 1e9
        if topic in CAMERA_TOPICS:
            rgb = fields_to_array(ImageFields(msg.height, msg.width, msg.encoding, int(msg.is_bigendian), msg.step,
                                              bytes(msg.data)), "rgb8")
            log.frame(t, CAMERA_TOPICS[topic], rgb)
        elif topic == "joint_states":
            log.joint_state(t, np.asarray(msg.position), tuple(msg.name))
        elif topic == "joint_commands":
            log.joint_command(t, np.asarray(msg.position), tuple(msg.name))
        elif topic == "action_chunk":
            log.chunk_message(t, msg)
        elif topic == "current_task":
            log.task_message(t, msg)
        elif topic == "route_decision":
            log.route_message(t, msg)
        elif topic == "workcell/episode":
            log.episode_message(t, msg)
    end = (events[-1][0] - start) / 1e9
    instruction = bag.metadata.get("instruction")
    if instruction:
        log.event(0.0, f"instruction: {instruction!r}")
    success = bag.metadata.get("task_success")
    if success is not None:
        log.event(end, f"outcome: {'SUCCESS' if success == 'true' else 'FAILURE'} (task_success={success})",
                  "INFO" if success == "true" else "WARN")
    return {"source": str(bag_path), "messages": len(events), "duration_s": round(end, 2), "logged": dict(log.counts)}


def log_lerobot(log: ViewerLog, root: str | Path, episode: int = 0, calibration_file: str | None = None,
                cameras: dict[str, str] | None = None) -> dict:
    """One episode of a LeRobot dataset: its cameras, states (as joint states), actions (as commands), task."""
    from nanovla_ros.data.lerobot_format import iter_lerobot_episodes

    found = list(iter_lerobot_episodes(root, calibration_file, cameras, episodes=[episode]))
    if not found:
        raise ViewerSourceError(f"{str(root)!r} has no episode {episode}")
    ep = found[0]
    log.event(0.0, f"task: {ep['task']!r} (LeRobot {ep['format']}, episode {episode})")
    for k, t in enumerate(ep["timestamps"]):
        for camera, frames in ep["frames"].items():
            log.frame(float(t), camera, frames[k])
        log.joint_state(float(t), ep["states"][k])
        log.joint_command(float(t), ep["actions"][k])
    return {"source": f"{root} episode {episode}", "frames": len(ep["timestamps"]), "logged": dict(log.counts)}


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()
