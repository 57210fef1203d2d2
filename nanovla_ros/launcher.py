"""The pip-only host's launcher: starts the so101 graph as `ros2 launch nanovla_ros so101.launch.py`
would, from the same node list and parameters (nanovla_ros.graph).

- Each node is its own process (`python -m <module> --ros-args ...`), in its own session so that a
  terminal Ctrl-C reaches only the launcher, which then stops the nodes in SHUTDOWN_ORDER (SIGINT,
  then SIGTERM, then SIGKILL after a grace period).
- No node outlives the launcher, however it ends (PDEATHSIG): if the launcher is killed, every node gets
  SIGTERM except the driver, which gets SIGHUP: a software fault, not a stop, so it exits leaving the
  servos holding their last goal with torque on (see so101_driver_node).
- Output is relayed line by line with a `[name]` prefix.
- Start-up succeeds when every node is visible on the ROS graph; a node that exits first is reported
  with its exit code and the launcher exits non-zero.
- A node that dies later is reported with its exit code and, if its spec says respawn (the policy, router,
  encoder, cameras, recorder), started again after RESPAWN_DELAY_S while the driver holds the arm; more than
  MAX_RESPAWNS deaths within RESPAWN_WINDOW_S, or the death of the driver or the workcell, stop the others
  and the launcher exits non-zero.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from nanovla_ros.graph import (
    MAX_RESPAWNS,
    RESPAWN_DELAY_S,
    RESPAWN_WINDOW_S,
    SHUTDOWN_ORDER,
    NodeSpec,
    active_nodes,
    resolve_arguments,
    ros_args,
)

log = logging.getLogger("nanovla.launch")

_PR_SET_PDEATHSIG = 1


# The signal a node gets when the launcher dies without stopping it. The driver's SIGHUP means "your supervisor
# is gone": hold, keep torque on, exit (so101_driver_node); SIGTERM would mean an explicit stop (torque off).
PARENT_DEATH_SIGNAL = {"so101_driver": signal.SIGHUP}


def _die_with_parent(sig: int) -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    except OSError:
        pass  # not Linux: children may outlive a killed launcher, as with ros2 launch
    # A node starts with the normal policy even if the launching thread was made real-time (a library may do that:
    # SVT-AV1 does as root); busy-waiting threads at real-time priority would starve the machine.
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


class LaunchError(RuntimeError):
    """A node failed to start; the message names it and gives its exit code."""


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    relay: threading.Thread


class Launcher:
    def __init__(self, arguments: dict[str, str], out: TextIO | None = None,
                 node_filter: Callable[[NodeSpec], bool] | None = None) -> None:
        self.arguments = resolve_arguments(arguments)
        self.specs = [s for s in active_nodes(self.arguments) if node_filter is None or node_filter(s)]
        self._out = out or sys.stdout
        self._out_lock = threading.Lock()
        self.nodes: dict[str, RunningNode] = {}
        self.interrupted = threading.Event()  # set by a signal handler: stop waiting, shut down

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        with self._out_lock:
            self._out.write(f"[launch] {text}\n")
            self._out.flush()

    def _relay(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._out_lock:
                self._out.write(f"[{name}] {raw.decode('utf-8', 'replace').rstrip()}\n")
                self._out.flush()
        stream.close()

    # ------------------------------------------------------------------ start
    def command(self, spec: NodeSpec) -> list[str]:
        return [sys.executable, "-m", spec.module, *ros_args(spec, self.arguments)]

    def _spawn(self, spec: NodeSpec) -> None:
        """Start one node's process (from the thread that will outlive it: PDEATHSIG follows the thread)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
        death_signal = PARENT_DEATH_SIGNAL.get(spec.name, signal.SIGTERM)
        process = subprocess.Popen(
            self.command(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True, preexec_fn=functools.partial(_die_with_parent, death_signal))
        relay = threading.Thread(target=self._relay, args=(spec.name, process.stdout), daemon=True)
        relay.start()
        self.nodes[spec.name] = RunningNode(spec, process, relay)
        self.say(f"started {spec.executable} as '{spec.name}' (pid {process.pid})")

    def start(self, timeout_s: float = 120.0) -> None:
        """Start every node and wait until each is on the ROS graph; raise LaunchError otherwise."""
        for spec in self.specs:
            self._spawn(spec)
        self._wait_on_graph(timeout_s)

    def _wait_on_graph(self, timeout_s: float) -> None:
        import rclpy
        from rclpy.context import Context

        namespace = "/" + self.arguments["namespace"].strip("/") if self.arguments["namespace"] else "/"
        wanted = {(name, namespace) for name in self.nodes}
        context = Context()
        rclpy.init(args=[], context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        watcher = rclpy.create_node("nanovla_launcher", context=context, start_parameter_services=False)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                for name, node in self.nodes.items():
                    code = node.process.poll()
                    if code is not None:
                        raise LaunchError(f"node '{name}' exited during start-up with code {code} (see its log above)")
                seen = set(watcher.get_node_names_and_namespaces())
                missing = sorted(name for name, ns in wanted - seen)
                if not missing or self.interrupted.is_set():
                    break
                if time.monotonic() > deadline:
                    raise LaunchError(f"node(s) {missing} did not appear on the ROS graph within {timeout_s:g} s")
                time.sleep(0.1)  # polling interval of a condition with a deadline, not a fixed wait
        finally:
            watcher.destroy_node()
            context.try_shutdown()
        if not self.interrupted.is_set():
            self.say(f"all {len(self.nodes)} nodes are up")

    # ------------------------------------------------------------------ run and stop
    def wait_for_failure(self, stop: threading.Event | None = None) -> tuple[str, int] | None:
        """Block until a node exits (return its name and code) or ``stop`` is set (return None)."""
        while stop is None or not stop.is_set():
            for name, node in self.nodes.items():
                code = node.process.poll()
                if code is not None:
                    return name, code
            time.sleep(0.1)
        return None

    def supervise(self, stop: threading.Event) -> tuple[str, int] | None:
        """Run until ``stop`` is set (return None) or a node dies that must not be respawned, or has died too
        often (return its name and exit code). Respawnable nodes that die are started again."""
        deaths: dict[str, list[float]] = {}
        while not stop.is_set():
            failed = self.wait_for_failure(stop)
            if failed is None:
                return None
            name, code = failed
            spec = self.nodes[name].spec
            self.nodes[name].relay.join(timeout=2.0)
            now = time.monotonic()
            recent = [t for t in deaths.get(name, []) if now - t < RESPAWN_WINDOW_S] + [now]
            deaths[name] = recent
            if not spec.respawn:
                return name, code
            if len(recent) > MAX_RESPAWNS:
                self.say(f"ERROR: '{name}' died {len(recent)} times within {RESPAWN_WINDOW_S:g} s; not respawning it")
                return name, code
            self.say(f"'{name}' died with exit code {code}; respawning it in {RESPAWN_DELAY_S:g} s "
                     "(the driver holds the arm meanwhile)")
            if stop.wait(RESPAWN_DELAY_S):
                return None
            self._spawn(spec)
        return None

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """Stop nodes in SHUTDOWN_ORDER; return each node's exit code."""
        order = [n for n in SHUTDOWN_ORDER if n in self.nodes] + [n for n in self.nodes if n not in SHUTDOWN_ORDER]
        codes = {}
        for name in order:
            process = self.nodes[name].process
            for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                if process.poll() is not None:
                    break
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(wait_s)
                except subprocess.TimeoutExpired:
                    self.say(f"'{name}' did not stop after {sig.name} within {wait_s:g} s")
            codes[name] = process.wait()
            self.nodes[name].relay.join(timeout=2.0)
            self.say(f"'{name}' stopped (exit code {codes[name]})")
        return codes


def run(arguments: dict[str, str], startup_timeout_s: float = 120.0) -> int:
    """`nanovla launch so101`: start, supervise until Ctrl-C or a node dies, stop in order."""
    launcher = Launcher(arguments)
    stop = launcher.interrupted

    def on_signal(signum, _frame):
        launcher.say(f"{signal.Signals(signum).name} received, stopping")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            launcher.start(startup_timeout_s)
        except LaunchError as error:
            launcher.say(f"ERROR: {error}")
            launcher.stop()
            return 1
        if stop.is_set():
            launcher.stop()
            return 0
        failed = launcher.supervise(stop)
        if failed is not None:
            name, code = failed
            launcher.say(f"ERROR: node '{name}' died with exit code {code}; stopping the others")
            launcher.stop()
            return 1
        codes = launcher.stop()
        # SIGINT-stopped nodes exit 0; a non-zero code means a node failed while stopping.
        bad = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
        if bad:
            launcher.say(f"ERROR: node(s) failed while stopping: {bad}")
            return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
