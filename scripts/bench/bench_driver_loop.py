#!/usr/bin/env python3
"""Benchmark: the SO-101 driver's control loop through scservo_sdk against the STS3215 bus emulator
(in its own process, as a real bus would be), at state rates of 30/60/100 Hz with control at 30 Hz,
without and with 5 % corrupted servo replies. Chunks arrive every h = 10 control steps.

    .venv/bin/python scripts/bench/bench_driver_loop.py [--seconds 5] [--latency-timer-ms 16]

Prints a markdown table: achieved state and control rates, loop period p50/p99, jitter p99
(|period - nominal|), sync-read time p50/p99, missed control ticks, bus retries.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from nanovla_ros.driver.arm import ControlLoop, So101Arm
from nanovla_ros.driver.bus import FeetechBus
from nanovla_ros.driver.calibration import default_calibration
from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.driver.emulator import EmulatorProcess, FaultConfig
from nanovla_ros.driver.executor import make_chunk


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run(state_hz: float, corrupt: float, seconds: float, latency_ms: float) -> dict:
    config = DriverConfig(state_rate_hz=state_hz, control_rate_hz=30.0, latency_timer_ms=latency_ms)
    with EmulatorProcess(FaultConfig(corrupt_rate=corrupt, seed=11)) as emulator:
        bus = FeetechBus(emulator.port_name, config.baudrate, config.bus_retries, config.latency_timer_ms)
        arm = So101Arm(bus, default_calibration(config.joint_names), config)
        arm.connect()
        arm.enable()
        loop = ControlLoop(arm, lambda t, p: None, lambda t, c: None, window=100_000)
        stop = threading.Event()

        def feed_chunks() -> None:  # a policy replanning every h = 10 steps
            chunk_id = 0
            while not stop.wait(10 / 30):
                now = time.time()
                t = now + np.arange(30) / 30
                table = 0.3 * np.sin(t)[:, None] * np.ones(6)[None]  # (H, J)
                arm.submit(make_chunk(chunk_id, now, 1 / 30, 10, list(config.joint_names), table.ravel(), 30,
                                      config.joint_names), now)
                chunk_id += 1

        feeder = threading.Thread(target=feed_chunks, daemon=True)
        start = time.monotonic()
        loop.start()
        feeder.start()
        time.sleep(seconds)
        stop.set()
        loop.stop()
        elapsed = time.monotonic() - start
        arm.disable()
        bus.close()
    periods = np.asarray(loop.stats.periods_s[5:]) * 1e3
    reads = np.asarray(loop.stats.read_s[5:]) * 1e3
    return {
        "latency": latency_ms, "state_hz": state_hz, "faults": f"{corrupt:.0%} corrupt",
        "state_rate": loop.stats.cycles / elapsed, "control_rate": loop.stats.control_ticks / elapsed,
        "p50": np.percentile(periods, 50), "p99": np.percentile(periods, 99),
        "jitter_p99": np.percentile(np.abs(periods - 1e3 / state_hz), 99),
        "read_p50": np.percentile(reads, 50), "read_p99": np.percentile(reads, 99),
        "missed": loop.stats.missed_control_ticks, "retries": bus.stats.retries,
        "failures": bus.stats.read_failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-timer-ms", type=float, nargs="+", default=[16.0, 4.0],
                        help="reply-timeout latency settings to compare (16 = the SDK's FTDI-style default)")
    args = parser.parse_args()
    rows = [run(hz, corrupt, args.seconds, latency) for latency in args.latency_timer_ms
            for corrupt in (0.0, 0.05) for hz in (30.0, 60.0, 100.0)]
    print(f"# SO-101 driver loop on the STS3215 emulator ({cpu_name()}; {args.seconds:g} s per row; "
          f"control 30 Hz, chunks every 10 steps)\n")
    print("| latency_timer_ms | state Hz | faults | state rate (Hz) | control rate (Hz) | period p50 / p99 (ms) | jitter p99 (ms) "
          "| sync read p50 / p99 (ms) | missed control ticks | bus retries | failed reads |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['latency']:g} | {r['state_hz']:g} | {r['faults']} | {r['state_rate']:.1f} | {r['control_rate']:.1f} | "
              f"{r['p50']:.2f} / {r['p99']:.2f} | {r['jitter_p99']:.2f} | {r['read_p50']:.2f} / {r['read_p99']:.2f} | "
              f"{r['missed']} | {r['retries']} | {r['failures']} |")


if __name__ == "__main__":
    main()
