"""Episodes as rosbag2 bags (MCAP): writing them (recorder node) and reading them back (dataset builder)."""
