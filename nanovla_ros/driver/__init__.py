"""Arm ring: Feetech bus, calibration and chunk execution. Lands with issue #3."""
