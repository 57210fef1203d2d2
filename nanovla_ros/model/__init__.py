"""NanoVLA in PyTorch (no ROS imports): configuration, modules, checkpoints, feature cache, training."""
