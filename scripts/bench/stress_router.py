"""Stress the instruction path: concurrent set_instruction calls against the launched router and encoder.

    python scripts/bench/stress_router.py --rate-hz 100 --calls 1000 [--clients 4]
    python scripts/bench/stress_router.py --burst 3 10 100

Starts the router and the instruction encoder with the pip launcher (real processes, real DDS, loopback only),
then either sends ``--calls`` requests at ``--rate-hz`` spread over ``--clients`` client nodes, or fires bursts
of N simultaneous requests from 10 client nodes. Clients are kept for the whole run and answered once before
any clock starts (see ``ClientPool``). Prints, per run: calls answered, accepted, answered "busy", other rejections, and
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


def _start_graph(out=None):
    """The router and the instruction encoder, launched; their output to ``out`` (default: discarded)."""
    from nanovla_ros.launcher import Launcher

    launcher = Launcher({}, out=out or open(os.devnull, "w"), node_filter=lambda s: s.name in ("router", "instruction_encoder"))
    launcher.start(timeout_s=120.0)
    return launcher


class ClientPool:
    """``n_clients`` client nodes of set_instruction in one context, kept across bursts like real callers.

    A service can only answer a client whose reply reader it has discovered (Fast DDS waits 100 ms for it, then
    drops the reply with "failed to send response (timeout)"), so ``warm`` has every client answered once before
    the clock starts: the bursts then measure the router, not DDS discovery of brand-new nodes.
    """

    def __init__(self, n_clients: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from nanovla_ros.nodes.common import BURST_SERVICE_QOS
        from nanovla_ros.srv import SetInstruction

        self.request_type = SetInstruction.Request
        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = [rclpy.create_node(f"stress_client_{i}", context=self.context) for i in range(n_clients)]
        self.clients = [n.create_client(SetInstruction, "set_instruction", qos_profile=BURST_SERVICE_QOS)
                        for n in self.nodes]
        for node in self.nodes:
            self.executor.add_node(node)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()

    def spin_until(self, condition, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.002)
        return True

    def warm(self, timeout_s: float) -> None:
        """Every client asks once (a cached instruction) and must be answered: discovery done both ways."""
        if not self.spin_until(lambda: all(c.service_is_ready() for c in self.clients), timeout_s):
            raise RuntimeError("set_instruction never appeared")
        for client in self.clients:
            future = client.call_async(self.request_type(text="touch the red cube 0"))
            if not self.spin_until(future.done, timeout_s):
                raise RuntimeError(f"{client.srv_name} did not answer a warm-up call within {timeout_s:g} s")


def run_calls(n_calls: int, rate_hz: float, n_clients: int, timeout_s: float = 60.0, burst: bool = False,
              pool: ClientPool | None = None) -> dict:
    """Send ``n_calls`` set_instruction requests (all at once if ``burst``) from ``pool`` (else a new, warmed pool
    of ``n_clients``); return counts and latencies."""
    own = pool is None
    if own:
        pool = ClientPool(n_clients)
    try:
        if own:
            pool.warm(max(timeout_s, 30.0))
        clients = pool.clients
        n_clients = len(clients)
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
                    pool.executor.spin_once(timeout_sec=max(0.0, min(0.002, due - time.monotonic())))
                    collect()
            text = f"touch the red cube {k % 10}" if k % 2 else f"push the blue cube number {k} {time.time_ns()}"
            sent.append((time.monotonic(), clients[k % n_clients].call_async(pool.request_type(text=text))))
        end = time.monotonic() + timeout_s
        while len(answered) < n_calls and time.monotonic() < end:
            pool.executor.spin_once(timeout_sec=0.002)
            collect()
        for k, (_, future) in enumerate(sent):  # unanswered ones are given up, not left in the clients
            if k not in answered:
                clients[k % n_clients].remove_pending_request(future)
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
        if own:
            pool.__exit__(None, None, None)


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
        with ClientPool(10 if args.burst else args.clients) as pool:
            pool.warm(120.0)  # the router waits out MiniLM's loading on the first call
            if args.burst:
                for n in args.burst:
                    print(f"burst of {n}:", run_calls(n, 0.0, 0, burst=True, pool=pool), flush=True)
            else:
                print(f"{args.calls} calls at {args.rate_hz:g} Hz from {args.clients} client(s):",
                      run_calls(args.calls, args.rate_hz, 0, pool=pool), flush=True)
        print(f"router stopped {stop_router(launcher):.2f} s after SIGINT", flush=True)
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
