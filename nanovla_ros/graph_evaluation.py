"""Episodes through the deployed graph: the launcher starts the suite on the workcell with a checkpoint
(workcell:=true checkpoint:=...), the scene's instruction goes in through set_instruction like a user's, and
the workcell's success check decides. Each episode is a fresh launch (the arm starts at home, as in the
in-process harness), so a run of a few episodes takes minutes on two cores.

Latency along the graph, per chunk: camera stamp -> chunk received by this client (the policy's publish,
plus one DDS hop), the policy's inference alone (the chunk's inference_latency_ms; the rest is the image's
age when inference started) and camera stamp -> first action of the chunk written to the servos (the
driver's diagnostics, chunk_latency_p50_ms / p95).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from nanovla_ros.evaluation.closed_loop import MAX_STEPS

READY_TIMEOUT_S = 120.0  # the policy's and the encoder's loading, on a busy 2-core host


def run_graph_episodes(checkpoint: str, kinds: list[str], split: str, episodes: int, first_seed: int,
                       out_dir: str = "out/eval_graph", control_rate_hz: float = 30.0,
                       max_steps: int | None = None, params_file: str = "") -> dict:
    from diagnostic_msgs.msg import DiagnosticArray

    from nanovla_ros.client import NanovlaClient
    from nanovla_ros.launcher import Launcher, LaunchError
    from nanovla_ros.msg import ActionChunk, EpisodeStatus
    from nanovla_ros.nodes.common import (
        ACTION_CHUNK_TOPIC,
        COMMAND_QOS,
        DIAGNOSTICS_TOPIC,
        EPISODE_TOPIC,
        LATCHED_QOS,
        ns_from_stamp,
    )

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, chunk_ms, inference_ms, servo_p50, servo_p95 = [], [], [], [], []
    cores: dict[str, list[float]] = {}  # per node, the CPU cores it used during each episode
    for kind in kinds:
        for seed in range(first_seed, first_seed + episodes):
            log_file = (out / f"{kind}_{split}_{seed}.log").open("w")
            launcher = Launcher({"workcell": "true", "checkpoint": str(Path(checkpoint).resolve()), "task": kind,
                                 "seed": str(seed), "split": split,  # wrist_camera:=auto follows the checkpoint
                                 **({"params_file": str(Path(params_file).resolve())} if params_file else {})},
                                out=log_file)
            try:
                launcher.start(timeout_s=180.0)
                with NanovlaClient(node_name="nanovla_eval") as client:
                    status: list[EpisodeStatus] = []
                    diagnostics: list[dict] = []
                    latencies: list[float] = []

                    def on_chunk(msg: ActionChunk) -> None:
                        latencies.append((time.time_ns() - ns_from_stamp(msg.header.stamp)) / 1e6)
                        inference_ms.append(float(msg.inference_latency_ms))  # the policy's own part of it

                    def on_diag(msg: DiagnosticArray) -> None:
                        for s in msg.status:
                            values = {kv.key: kv.value for kv in s.values}
                            if "chunk_latency_p50_ms" in values:
                                diagnostics.append(values)

                    client.node.create_subscription(EpisodeStatus, EPISODE_TOPIC, status.append, LATCHED_QOS)
                    client.node.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, on_chunk, COMMAND_QOS)
                    client.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diag, COMMAND_QOS)
                    if not client.spin_until(lambda: bool(status), 30.0):
                        raise LaunchError("the workcell published no episode status")
                    # The clock starts once the graph is up, as a user waits for it: an instruction sent while a
                    # backbone still loads beside the policy (a 2-core host) costs the episode its first seconds.
                    if unready := client.wait_until_ready(READY_TIMEOUT_S):
                        raise LaunchError(f"not ready after {READY_TIMEOUT_S:g} s: {unready}")
                    instruction = status[-1].instruction
                    accepted = client.set_instruction(instruction, "auto", timeout_s=90.0)
                    started = time.monotonic()
                    cpu_before = {name: cpu_seconds(node.process.pid) for name, node in launcher.nodes.items()}
                    # The in-process harness's episode length as wall-clock time (``max_steps``: another length;
                    # on a slow host the chunks arrive late and the arm gets there later than in process).
                    limit_s = (max_steps or MAX_STEPS[kind]) / control_rate_hz
                    success = accepted.accepted and client.spin_until(lambda: status[-1].success, limit_s)
                    elapsed = time.monotonic() - started
                    for name, node in launcher.nodes.items():
                        used = cpu_seconds(node.process.pid)
                        if used is not None and cpu_before.get(name) is not None and elapsed > 0:
                            cores.setdefault(name, []).append((used - cpu_before[name]) / elapsed)
                    if diagnostics:  # one more diagnostics period, so the last chunks are counted
                        n = len(diagnostics)
                        client.spin_until(lambda: len(diagnostics) > n, 2.0)
                results.append({"kind": kind, "split": split, "seed": seed, "instruction": instruction,
                                "success": bool(success), "seconds": round(elapsed, 2), "chunks": len(latencies)})
                chunk_ms.extend(latencies)
                if diagnostics:
                    servo_p50.append(float(diagnostics[-1]["chunk_latency_p50_ms"]))
                    servo_p95.append(float(diagnostics[-1]["chunk_latency_p95_ms"]))
                print(f"[graph-eval] {kind} seed {seed}: {'SUCCESS' if success else 'failure'} "
                      f"({elapsed:.1f} s, {len(latencies)} chunks) {instruction!r}", flush=True)
            except LaunchError as error:
                results.append({"kind": kind, "split": split, "seed": seed, "success": False, "error": str(error)})
                print(f"[graph-eval] {kind} seed {seed}: launch failed: {error}", flush=True)
            finally:
                launcher.stop()
                log_file.close()
    pct = lambda values, q: float(np.percentile(values, q)) if values else None  # noqa: E731
    return {"episodes": results, "successes": sum(r["success"] for r in results), "count": len(results),
            "camera_to_chunk_ms": {"p50": pct(chunk_ms, 50), "p95": pct(chunk_ms, 95), "chunks": len(chunk_ms)},
            "inference_ms": {"p50": pct(inference_ms, 50), "p95": pct(inference_ms, 95)},
            "camera_to_servo_ms": {"p50_of_episode_p50s": pct(servo_p50, 50), "max_episode_p95": max(servo_p95) if servo_p95 else None},
            "cpu_cores_by_node": {name: round(float(np.mean(v)), 3) for name, v in sorted(cores.items())}}


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, from /proc (None where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
