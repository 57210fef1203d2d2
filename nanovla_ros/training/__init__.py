"""Fine-tuning NanoVLA on cached frozen features (no ROS imports)."""
