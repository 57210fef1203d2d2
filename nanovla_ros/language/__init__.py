"""Language ring: instruction validation, frozen text encoders and the embedding cache. No ROS imports."""
