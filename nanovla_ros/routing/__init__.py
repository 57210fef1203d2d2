"""Routing ring: which language backbone serves an instruction. No ROS imports."""
