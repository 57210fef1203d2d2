"""Closed-loop evaluation in the simulated workcell (no ROS imports)."""
