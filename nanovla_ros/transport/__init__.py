"""Transports shared by components that must not import each other (no ROS): the shared-memory frame block
between the simulated workcell (writer) and the camera node's `sim` source (reader)."""
