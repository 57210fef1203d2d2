"""pip path of the package (pip-only hosts). ROS hosts build with colcon from CMakeLists.txt.

The executables are listed once, in nanovla_ros/entry_points.txt, which CMakeLists.txt reads too.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ENTRY_POINTS = [
    line.strip()
    for line in (HERE / "nanovla_ros" / "entry_points.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="nanovla_ros",
    version="0.1.0",
    description="NanoVLA on a LeRobot SO-101 arm as a ROS 2 node suite",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nanovla_ros", "nanovla_ros.*"]),
    package_data={"nanovla_ros": ["entry_points.txt", "checkpoints/*.safetensors"]},
    entry_points={"console_scripts": ENTRY_POINTS},
)
