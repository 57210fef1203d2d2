"""CDR bytes for test bags, made with rosbags' serializer (rclpy's serialize_message returns its buffer with
a few uninitialised trailing bytes in these wheels, which strict readers refuse; real subscriptions deliver
exact payloads)."""
from __future__ import annotations

import numpy as np

from nanovla_ros.recording.bags import typestore


def _header(stamp_ns: int, frame_id: str = ""):
    t = typestore().types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                    frame_id=frame_id)


def joint_state(stamp_ns: int, names, positions) -> bytes:
    ts = typestore()
    msg = ts.types["sensor_msgs/msg/JointState"](header=_header(stamp_ns), name=list(names),
                                                position=np.asarray(positions, np.float64),
                                                velocity=np.zeros(0), effort=np.zeros(0))
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def image(stamp_ns: int, rgb: np.ndarray) -> bytes:
    ts = typestore()
    h, w, _ = rgb.shape
    msg = ts.types["sensor_msgs/msg/Image"](header=_header(stamp_ns, "front"), height=h, width=w, encoding="rgb8",
                                           is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).ravel())
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def current_task(stamp_ns: int, text: str, embedding=()) -> bytes:
    ts = typestore()
    msg = ts.types["nanovla_ros/msg/CurrentTask"](header=_header(stamp_ns), instruction_id=1, text=text,
                                                 backbone="small", encoder_id="test",
                                                 embedding=np.asarray(embedding, np.float32))
    return bytes(ts.serialize_cdr(msg, "nanovla_ros/msg/CurrentTask"))
