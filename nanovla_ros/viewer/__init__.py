"""The viewer (no ROS imports here): what the robot sees and plans, in Rerun, live or from a recording."""
