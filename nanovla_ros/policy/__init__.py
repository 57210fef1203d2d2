"""Policy ring (NanoVLA model and inference scheduling). The model lands with issue #4."""
