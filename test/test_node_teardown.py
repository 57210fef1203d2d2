"""A node's process always ends once asked to, even when its teardown hangs (run_node's deadlines).

A teardown can block where no Python signal handler runs again (a futex wait inside DDS while a node is
destroyed); such a process outlived its killed launcher, orphaned, ignoring SIGTERM. Here the hang is a Python
wait that no signal ends, stuck in close() or in destroy_node(): the process must still end, with code 1 and the
stuck thread's traceback on stderr, or at once on a second SIGTERM.
"""
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import wait_until

NODE = textwrap.dedent("""
    import sys, threading
    from rclpy.node import Node
    from nanovla_ros.nodes.common import run_node

    STUCK_IN = sys.argv[1]

    class StuckNode(Node):
        def __init__(self):
            super().__init__("stuck_teardown")
            print("up", flush=True)

        def close(self):
            print("closing", flush=True)
            if STUCK_IN == "close":
                threading.Event().wait()  # a signal handler runs, the wait goes on

        def destroy_node(self):
            print("destroying", flush=True)
            if STUCK_IN == "destroy_node":
                threading.Event().wait()
            super().destroy_node()

    sys.exit(run_node(StuckNode, [], close_deadline_s=float(sys.argv[2]), exit_deadline_s=float(sys.argv[3])))
""")


class _Node:
    def __init__(self, *argv: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen([sys.executable, "-c", NODE, *argv], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def said(self, line: str) -> bool:
        return f"{line}\n" in self.lines

    def output(self) -> str:
        self._reader.join(5)
        return "".join(self.lines)


@pytest.fixture
def node(ros_domain):
    nodes = []
    yield lambda *argv: nodes.append(_Node(*argv)) or nodes[-1]
    for n in nodes:
        if n.process.poll() is None:
            n.process.kill()


@pytest.mark.parametrize("stuck_in, close_s, exit_s", [("close", 2.0, 60.0), ("destroy_node", 60.0, 2.0)])
def test_a_teardown_that_hangs_ends_at_its_deadline_with_the_stuck_traceback(node, stuck_in, close_s, exit_s):
    stuck = node(stuck_in, str(close_s), str(exit_s))
    assert wait_until(lambda: stuck.said("up") or stuck.process.poll() is not None, 60), stuck.output()
    stuck.process.send_signal(signal.SIGTERM)
    try:
        code = stuck.process.wait(30)  # the deadline (2 s) and the interpreter's start-up margin, not the other 60
    except subprocess.TimeoutExpired:
        pytest.fail(f"still alive 30 s after SIGTERM, stuck in {stuck_in}:\n{stuck.output()}")
    output = stuck.output()
    assert code == 1, output
    assert "Timeout (0:00:02)!" in output, output  # faulthandler's watchdog, then every thread's traceback
    assert "line " in output and f"in {stuck_in}" in output, output


def test_a_second_sigterm_ends_a_teardown_at_once(node):
    stuck = node("close", "60", "60")
    assert wait_until(lambda: stuck.said("up") or stuck.process.poll() is not None, 60), stuck.output()
    stuck.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: stuck.said("closing") or stuck.process.poll() is not None, 10), stuck.output()
    stuck.process.send_signal(signal.SIGTERM)
    try:
        assert stuck.process.wait(10) == -signal.SIGTERM, stuck.output()
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second SIGTERM did not end the teardown:\n{stuck.output()}")


def test_a_node_that_is_not_stuck_still_exits_cleanly(node):
    fine = node("nowhere", "60", "60")
    assert wait_until(lambda: fine.said("up") or fine.process.poll() is not None, 60), fine.output()
    fine.process.send_signal(signal.SIGTERM)
    assert fine.process.wait(20) == 0, fine.output()
    assert "Timeout" not in fine.output()
