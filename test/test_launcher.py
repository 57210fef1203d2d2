"""The launcher's process handling that needs no ROS graph."""
import pytest


def test_a_node_process_starts_with_the_normal_scheduling_policy_even_from_a_real_time_thread():
    """A library (SVT-AV1, as root) can leave the launching thread at real-time SCHED_FIFO; the launcher's children
    must not inherit it (their busy-waiting threads would starve the machine)."""
    import functools
    import os
    import signal
    import subprocess
    import sys
    import threading

    from nanovla_ros.launcher import _die_with_parent

    out = {}

    def launch_from_a_real_time_thread():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # this thread only
        except (AttributeError, PermissionError, OSError) as error:
            out["skip"] = str(error)
            return
        out["child"] = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], capture_output=True, text=True,
            preexec_fn=functools.partial(_die_with_parent, signal.SIGTERM)).stdout.strip()

    thread = threading.Thread(target=launch_from_a_real_time_thread)
    thread.start()
    thread.join()
    if "skip" in out:
        pytest.skip(f"cannot raise a thread to SCHED_FIFO here: {out['skip']}")
    assert out["child"] == str(os.SCHED_OTHER)
