"""Closed-loop runs of a policy in the simulated workcell: evaluation, and DAgger collection (the policy drives,
the scripted expert labels). No ROS imports."""
