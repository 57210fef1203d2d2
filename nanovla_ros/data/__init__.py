"""Demonstrations: episode bags -> training samples (no ROS imports)."""
