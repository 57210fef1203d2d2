"""Camera ring: frame sources and image encodings, free of ROS imports."""
