"""Stress the instruction path: concurrent set_instruction calls against the launched router and encoder.

    python scripts/bench/stress_router.py --rate-hz 100 --calls 1000 [--clients 4]
    python scripts/bench/stress_router.py --burst 3 10 100

Starts the router and the instruction encoder with the pip launcher (real processes, real DDS, loopback only),
then either sends ``--calls`` requests at ``--rate-hz`` spread over ``--clients`` client nodes, or fires bursts
of N simultaneous requests. Prints, per run: calls answered, accepted, answered "busy", other rejections, and
latency p50 / p99 / max. Finally stops the router with SIGINT and reports how long it took. Half the
instructions are repeats (cache hits), half are new (encoder runs).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np

from nanovla_ros.nodes.router_node import RouterNode  # noqa: F401 - fails early if interfaces are missing


def _start_graph():
    from nanovla_ros.launcher import Launcher

    launcher = Launcher({}, out=open(os.devnull, "w"), node_filter=lambda s: s.name in ("router", "instruction_encoder"))
    launcher.start(timeout_s=120.0)
    return launcher


def run_calls(n_calls: int, rate_hz: float, n_clients: int, timeout_s: float = 60.0, burst: bool = False) -> dict:
    """Send ``n_calls`` set_instruction requests (all at once if ``burst``); return counts and latencies."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from nanovla_ros.nodes.common import BURST_SERVICE_QOS
    from nanovla_ros.srv import SetInstruction

    context = Context()
    rclpy.init(args=[], context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = [rclpy.create_node(f"stress_client_{i}", context=context) for i in range(n_clients)]
    clients = [n.create_client(SetInstruction, "set_instruction", qos_profile=BURST_SERVICE_QOS) for n in nodes]
    for node in nodes:
        executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while not all(c.service_is_ready() for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("set_instruction never appeared")
            executor.spin_once(timeout_sec=0.05)
        sent: list[tuple[float, object]] = []
        latencies, answered = {}, {}

        def collect() -> None:
            for k, (t0, future) in enumerate(sent):
                if k not in answered and future.done():
                    answered[k] = future.result()
                    latencies[k] = time.monotonic() - t0

        start = time.monotonic()
        for k in range(n_calls):
            if not burst:
                due = start + k / rate_hz
                while time.monotonic() < due:
                    executor.spin_once(timeout_sec=max(0.0, min(0.002, due - time.monotonic())))
                    collect()
            text = f"touch the red cube {k % 10}" if k % 2 else f"push the blue cube number {k} {time.time_ns()}"
            sent.append((time.monotonic(), clients[k % n_clients].call_async(SetInstruction.Request(text=text))))
        end = time.monotonic() + timeout_s
        while len(answered) < n_calls and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.002)
            collect()
        lat_ms = np.array(list(latencies.values())) * 1e3 if latencies else np.array([np.nan])
        replies = list(answered.values())
        return {
            "calls": n_calls, "answered": len(replies), "accepted": sum(r.accepted for r in replies),
            "busy": sum((not r.accepted) and r.message.startswith("busy") for r in replies),
            "other_rejections": sum((not r.accepted) and not r.message.startswith("busy") for r in replies),
            "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "max_ms": float(lat_ms.max()), "wall_s": time.monotonic() - start,
        }
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()


def stop_router(launcher) -> float:
    """SIGINT to the router; seconds until it exited."""
    process = launcher.nodes["router"].process
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(30)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--burst", type=int, nargs="*", default=None, help="simultaneous calls per burst instead")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    launcher = _start_graph()
    try:
        run_calls(1, 1.0, 1, timeout_s=120.0)  # the encoder answers "loading" until MiniLM is in; wait for it
        if args.burst:
            for n in args.burst:
                print(f"burst of {n}:", run_calls(n, 0.0, min(n, 10), burst=True), flush=True)
        else:
            print(f"{args.calls} calls at {args.rate_hz:g} Hz from {args.clients} client(s):",
                  run_calls(args.calls, args.rate_hz, args.clients), flush=True)
        print(f"router stopped {stop_router(launcher):.2f} s after SIGINT", flush=True)
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
