"""rosbag2 episode bags in MCAP, written and read with `rosbags` (no ROS installation needed): a folder
``<name>/`` with ``<name>.mcap`` and ``metadata.yaml``, which `ros2 bag`, Foxglove and `rosbags` open.

Each bag is one episode. Its ``custom_data`` (rosbag2 metadata) carries the instruction, the task, the
success flag, the robot and its calibration, so a bag explains itself.

A recorder that is killed (SIGKILL, power loss) cannot write the MCAP summary or metadata.yaml, and such a bag
opens nowhere. So that nothing recorded is lost: the episode's metadata is also written beside the bag when it
starts (``EPISODE_SIDECAR``), the recorder flushes what it has written every second (``flush``), and
``repair_bag`` (`nanovla bag repair`, and the recorder itself at start-up) reads the unfinished MCAP stream up
to where it ends and writes a finished bag from it, keeping the unfinished file beside it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

log = logging.getLogger(__name__)

INTERFACE_PACKAGE = "nanovla_ros"
EPISODE_SIDECAR = "nanovla_episode.json"  # the episode's metadata as of its start, for repair_bag
UNFINISHED_SUFFIX = ".unfinished"  # a repaired bag keeps the recorder's own file as <name>.mcap.unfinished

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
        try:
            (self.path / EPISODE_SIDECAR).write_text(json.dumps(self.metadata, indent=1))
        except OSError as error:
            raise BagError(f"cannot write {EPISODE_SIDECAR} in {str(self.path)!r}: {error.strerror or error}") from error
        self.flush()

    def flush(self) -> None:
        """Push everything written so far to the file, so that a killed recorder loses at most what came since.

        rosbags keeps up to 1 MiB of messages in memory before it writes a chunk; this closes the pending chunk
        early (its storage plugin's own ``close_chunk``) and flushes the file."""
        storage = getattr(self._writer, "storage", None)
        chunk = getattr(storage, "chunk", None)
        try:
            if chunk is not None and chunk.bio.tell() and hasattr(storage, "close_chunk"):
                storage.close_chunk()
            if hasattr(storage, "bio"):
                storage.bio.flush()
        except OSError as error:
            raise BagError(f"flushing bag {str(self.path)!r} failed: {error.strerror or error}") from error

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
        (self.path / EPISODE_SIDECAR).unlink(missing_ok=True)  # metadata.yaml has it now
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
                       f"killed before it could close? `nanovla bag repair {path}` rebuilds it")
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
    yield from sorted(p.parent for p in root.rglob("metadata.yaml"))


# ---------------------------------------------------------------------------------------------- repair
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06


@dataclass
class RepairReport:
    path: Path
    messages: int
    duration_s: float
    lost_bytes: int  # at the end of the unfinished file: a record cut off by the kill


def unfinished_bags(root: str | Path) -> list[Path]:
    """Bag folders under ``root`` (or ``root`` itself) holding an MCAP file but no metadata.yaml."""
    root = Path(root)
    candidates = [root] if root.is_dir() else []
    candidates += [p for p in sorted(root.rglob("*")) if p.is_dir()] if root.is_dir() else []
    return [p for p in candidates if not (p / "metadata.yaml").exists() and any(p.glob("*.mcap"))
            and not p.name.endswith(".repairing")]


def _string(data: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", data, at)
    return data[at + 4:at + 4 + n].decode("utf-8"), at + 4 + n


def _scan_mcap(data: bytes):
    """Yield ("schema", id, name), ("channel", id, topic, schema_id) and ("message", channel, log_time, payload)
    from an MCAP byte stream, up to its first incomplete or damaged record; finally ("end", offset)."""
    from rosbags.rosbag2.storage_mcap import decompress  # the pinned rosbags' own chunk decompression

    def records(buffer: bytes, start: int):
        at = start
        while at + 9 <= len(buffer):
            op, length = buffer[at], struct.unpack_from("<Q", buffer, at + 1)[0]
            if at + 9 + length > len(buffer):
                break  # cut off
            yield op, buffer[at + 9:at + 9 + length]
            at += 9 + length
        yield None, at

    end = len(_MCAP_MAGIC)
    for op, body in records(data, len(_MCAP_MAGIC)):
        if op is None:
            end = body
            break
        if op == _OP_CHUNK:
            uncompressed_size, crc = struct.unpack_from("<QI", body, 16)
            compression, at = _string(body, 28)
            (size,) = struct.unpack_from("<Q", body, at)
            try:
                inner = decompress(body[at + 8:at + 8 + size], compression, uncompressed_size, crc)
            except Exception:  # noqa: BLE001 - a damaged chunk ends the readable part
                yield "end", end
                return
            for inner_op, inner_body in records(inner, 0):
                if inner_op is not None:
                    yield from _decode_record(inner_op, inner_body)
        else:
            yield from _decode_record(op, body)
    yield "end", end


def _decode_record(op: int, body: bytes):
    if op == _OP_SCHEMA:
        (schema_id,) = struct.unpack_from("<H", body, 0)
        name, _ = _string(body, 2)
        yield "schema", schema_id, name
    elif op == _OP_CHANNEL:
        channel_id, schema_id = struct.unpack_from("<HH", body, 0)
        topic, _ = _string(body, 4)
        yield "channel", channel_id, topic, schema_id
    elif op == _OP_MESSAGE:
        channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
        yield "message", channel_id, log_time, body[22:]


def repair_bag(path: str | Path) -> RepairReport:
    """Make a finished bag of one whose recorder was killed: every message up to where the file ends, the
    episode's metadata from its sidecar (plus ``interrupted: true`` and ``repaired: true``), the MCAP summary
    and metadata.yaml. The unfinished file is kept beside it as ``<name>.mcap.unfinished``."""
    path = Path(path)
    if (path / "metadata.yaml").exists():
        raise BagError(f"{str(path)!r} is a finished bag; nothing to repair")
    files = sorted(path.glob("*.mcap"))
    if len(files) != 1:
        raise BagError(f"{str(path)!r} holds {len(files)} .mcap files; expected the one its recorder wrote")
    source = files[0]
    data = source.read_bytes()
    if not data.startswith(_MCAP_MAGIC):
        raise BagError(f"{str(source)!r} is not an MCAP file (no MCAP magic at its start)")
    sidecar = path / EPISODE_SIDECAR
    metadata = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    schemas, channels, messages, end = {}, {}, [], len(data)
    for item in _scan_mcap(data):
        kind = item[0]
        if kind == "schema":
            schemas[item[1]] = item[2]
        elif kind == "channel":
            channels[item[1]] = (item[2], schemas.get(item[3], ""))
        elif kind == "message" and item[1] in channels:
            messages.append((item[2], item[1], item[3]))
        elif kind == "end":
            end = item[1]
    staging = path.with_name(path.name + ".repairing")
    shutil.rmtree(staging, ignore_errors=True)
    topics = {topic: msgtype for topic, msgtype in channels.values()}
    writer = EpisodeBagWriter(staging, topics, {**metadata, "task_success": metadata.get("task_success", "unknown"),
                                                "interrupted": "true", "repaired": "true"})
    by_channel = {cid: topic for cid, (topic, _) in channels.items()}
    for log_time, cid, payload in messages:
        writer.write(by_channel[cid], log_time, payload)
    writer.close()
    final_mcap = staging / f"{staging.name}.mcap"
    # Into the original folder: the finished file under the folder's own name, the unfinished one kept.
    kept = source.with_name(source.name + UNFINISHED_SUFFIX)
    source.rename(kept)
    final_mcap.rename(path / f"{path.name}.mcap")
    metadata_yaml = (staging / "metadata.yaml").read_text().replace(f"{staging.name}.mcap", f"{path.name}.mcap")
    (path / "metadata.yaml").write_text(metadata_yaml)
    shutil.rmtree(staging, ignore_errors=True)
    sidecar.unlink(missing_ok=True)
    times = [t for t, _, _ in messages]
    report = RepairReport(path, len(messages), (max(times) - min(times)) / 1e9 if times else 0.0, len(data) - end)
    log.info("repaired %s: %d messages, %.2f s; the unfinished file is kept as %s", path, report.messages,
             report.duration_s, kept.name)
    return report
