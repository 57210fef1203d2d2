"""rosbag2 episode bags in MCAP, written and read with `rosbags` (no ROS installation needed; the files are
the ones `ros2 bag record -s mcap` writes: a folder with ``<name>_0.mcap`` and ``metadata.yaml``).

Each bag is one episode. Its ``custom_data`` (rosbag2 metadata) carries the instruction, the task, the
success flag, the robot and its calibration, so a bag explains itself.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

INTERFACE_PACKAGE = "nanovla_ros"

# What an episode bag holds: relative topic -> message type. Relative, so a namespaced graph records the same.
RECORDED_TOPICS: dict[str, str] = {
    "camera/image_raw": "sensor_msgs/msg/Image",
    "camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "wrist_camera/image_raw": "sensor_msgs/msg/Image",  # wrist_camera:=true
    "wrist_camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "joint_states": "sensor_msgs/msg/JointState",
    "joint_commands": "sensor_msgs/msg/JointState",  # what the driver actually sent to the servos
    "leader/joint_commands": "sensor_msgs/msg/JointState",
    "current_task": f"{INTERFACE_PACKAGE}/msg/CurrentTask",
    "route_decision": f"{INTERFACE_PACKAGE}/msg/RouteDecision",
    "action_chunk": f"{INTERFACE_PACKAGE}/msg/ActionChunk",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "workcell/episode": f"{INTERFACE_PACKAGE}/msg/EpisodeStatus",
}


class BagError(RuntimeError):
    """A bag that cannot be written or read; the message names the bag and the reason."""


def _interface_dirs() -> list[Path]:
    """Where our .msg files live: the source tree, an install's share/ (colcon or the pip venv)."""
    candidates = [Path(__file__).resolve().parents[2] / "msg", Path(sys.prefix) / "share" / INTERFACE_PACKAGE / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / INTERFACE_PACKAGE / "msg")
    return [d for d in candidates if d.is_dir()]


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 standard types plus this package's messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    dirs = _interface_dirs()
    if not dirs:
        raise BagError(f"cannot find the {INTERFACE_PACKAGE} .msg files (looked beside the sources and in share/)")
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{INTERFACE_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class EpisodeBagWriter:
    """One episode's bag. ``write`` takes CDR bytes as they came off the wire (no deserialisation)."""

    def __init__(self, path: str | Path, topics: dict[str, str], metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {str(self.path)!r} already exists; refusing to overwrite a recording")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
            self._writer.open()
        except OSError as error:
            raise BagError(f"cannot create bag {str(self.path)!r}: {error.strerror or error}") from error
        store = typestore()
        self._connections = {topic: self._writer.add_connection(topic, msgtype, typestore=store)
                             for topic, msgtype in topics.items()}
        self.metadata: dict[str, str] = dict(metadata or {})
        self.messages = 0
        self.closed = False

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        try:
            self._writer.write(self._connections[topic], int(timestamp_ns), data)
        except OSError as error:
            raise BagError(f"writing to bag {str(self.path)!r} failed: {error.strerror or error}") from error
        self.messages += 1

    def close(self, metadata: dict[str, str] | None = None) -> Path:
        """Finish the bag (writes the MCAP summary and metadata.yaml); idempotent."""
        if self.closed:
            return self.path
        self.metadata.update(metadata or {})
        for key, value in self.metadata.items():
            self._writer.set_custom_data(str(key), str(value))
        self.closed = True
        try:
            self._writer.close()
        except OSError as error:
            raise BagError(f"closing bag {str(self.path)!r} failed: {error.strerror or error}") from error
        return self.path

    def discard(self) -> None:
        """Drop the episode: close what is open, delete the folder."""
        if not self.closed:
            self.closed = True
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the folder goes anyway
                pass
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class EpisodeBag:
    """A bag read back: messages per relative topic (receive time ns, deserialised message), metadata."""

    path: Path
    metadata: dict[str, str]
    messages: dict[str, list[tuple[int, object]]] = field(default_factory=dict)
    start_ns: int = 0
    duration_ns: int = 0


def _custom_data(path: Path) -> dict[str, str]:
    import yaml

    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}


def relative_topic(topic: str, namespace: str = "") -> str:
    prefix = namespace.rstrip("/") + "/" if namespace else "/"
    return topic[len(prefix):] if topic.startswith(prefix) else topic.lstrip("/")


def read_episode(path: str | Path, topics: list[str] | None = None, namespace: str = "") -> EpisodeBag:
    """Read (and deserialise) the given relative topics of one episode bag."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{str(path)!r} is not a finished rosbag2 bag (no metadata.yaml): was the recording "
                       f"killed before it could close? `ros2 bag reindex` can rebuild it")
    store = typestore()
    bag = EpisodeBag(path, _custom_data(path))
    try:
        with Reader(path) as reader:
            bag.start_ns, bag.duration_ns = reader.start_time, reader.duration
            wanted = [c for c in reader.connections
                      if topics is None or relative_topic(c.topic, namespace) in topics]
            for connection, timestamp, raw in reader.messages(connections=wanted):
                msg = store.deserialize_cdr(raw, connection.msgtype)
                bag.messages.setdefault(relative_topic(connection.topic, namespace), []).append((timestamp, msg))
    except Exception as error:  # rosbags raises its own errors for damaged files
        raise BagError(f"cannot read bag {str(path)!r}: {error}") from error
    return bag


def list_bags(root: str | Path) -> Iterator[Path]:
    """Bag folders under ``root`` (sorted), finished ones only."""
    root = Path(root)
    if (root / "metadata.yaml").is_file():
        yield root
        return
    for path in sorted(p.parent for p in root.rglob("metadata.yaml")):
        yield path
