"""`nanovla collect`: demonstrations through the whole ROS graph, one rosbag2 (MCAP) bag per episode.

The suite is launched on the simulated workcell with the expert playing the leader arm and the recorder
running (workcell:=true teleop:=true record:=true). For each episode: the workcell lays out a new scene
(its reset brings the arm home through the driver first), the recorder starts a bag, the scene's
instruction goes through the router like a user's, the expert teleoperates, the driver follows through
the servo bus, and the bag is closed with the workcell's success flag. Episodes already on disk are
skipped, so an interrupted collection resumes where it stopped.
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

from nanovla_ros.launcher import Launcher, LaunchError

SETTLE_S = 0.6  # after the expert finishes, let a released cube land before judging (as the in-process harness)


def episode_name(kind: str, split: str, seed: int) -> str:
    return f"{kind}_{split}_seed{seed:05d}"


def run_collect(out_dir: str, kind: str, episodes: int, split: str = "train", first_seed: int = 0,
                timeout_s: float = 40.0, log_dir: str = "out/collect", cameras: tuple[str, ...] = ("front",)) -> int:
    from tqdm import tqdm

    from nanovla_ros.client import NanovlaClient, ServiceUnavailable
    from nanovla_ros.msg import EpisodeStatus
    from nanovla_ros.nodes.common import EPISODE_TOPIC, LATCHED_QOS

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: the open bag is closed
    bags = Path(out_dir).expanduser().resolve()
    seeds = [s for s in range(first_seed, first_seed + episodes) if not (bags / episode_name(kind, split, s)).exists()]
    if not seeds:
        print(f"[collect] all {episodes} episodes already in {bags}")
        return 0
    logs = Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    log_file = (logs / "launch.log").open("w")
    launcher = Launcher({"workcell": "true", "teleop": "true", "record": "true", "bag_dir": str(bags), "task": kind,
                         "seed": str(seeds[0]), "wrist_camera": str("wrist" in cameras).lower()}, out=log_file)
    results: list[bool] = []
    try:
        print(f"[collect] launching the suite with the workcell, expert teleop and recorder (log: {logs}/launch.log)")
        launcher.start(timeout_s=180.0)
        with NanovlaClient(node_name="nanovla_collect") as client:
            status: list[EpisodeStatus] = []
            client.node.create_subscription(EpisodeStatus, EPISODE_TOPIC, status.append, LATCHED_QOS)
            bar = tqdm(seeds, desc=f"collect {kind}/{split}", unit="episode")
            for seed in bar:
                reset = client.reset_episode(seed, kind, split, timeout_s=30.0)
                if not reset.success:
                    print(f"[collect] reset failed: {reset.message}")
                    return 1
                metadata = {"instruction": reset.instruction, "task_kind": reset.task_kind, "cube": reset.cube,
                            "target": reset.target, "split": split, "seed": seed, "source": "expert_teleop",
                            "control_rate_hz": 30.0}
                started = client.start_recording(episode_name(kind, split, seed), metadata)
                if not started.success:
                    print(f"[collect] {started.message}")
                    return 1
                accepted = client.set_instruction(reset.instruction, "auto", timeout_s=60.0)
                if not accepted.accepted:
                    client.discard_recording()
                    print(f"[collect] instruction rejected: {accepted.message}")
                    return 1

                def finished() -> bool:
                    s = status[-1] if status else None
                    return s is not None and s.episode == reset.episode and s.expert_done

                done = client.spin_until(finished, timeout_s)
                settle_end = time.monotonic() + SETTLE_S
                client.spin_until(lambda: time.monotonic() >= settle_end, SETTLE_S + 1.0)
                last = [s for s in status if s.episode == reset.episode]
                success = bool(last and last[-1].success)
                stopped = client.stop_recording(success, {"expert_finished": str(done).lower()})
                if not stopped.success:
                    print(f"[collect] {stopped.message}")
                    return 1
                results.append(success)
                bar.set_postfix(success=f"{sum(results)}/{len(results)}", messages=stopped.messages)
        rate = sum(results) / max(1, len(results))
        print(f"[collect] {len(results)} episodes recorded into {bags}: {sum(results)} succeeded ({rate:.0%}); "
              f"failed ones are kept with task_success=false")
        return 0
    except (LaunchError, ServiceUnavailable) as error:
        print(f"[collect] FAILED: {error} (see {logs}/launch.log)")
        return 1
    finally:
        launcher.stop()
        log_file.close()


# --------------------------------------------------------------------------- in process (no ROS)
_WORKER: dict = {}


def _init_worker() -> None:
    from nanovla_ros.sim.workcell import Workcell

    _WORKER["workcell"] = Workcell()


def _one_episode(job: tuple) -> tuple[str, bool]:
    from nanovla_ros.data.demos import write_shard
    from nanovla_ros.sim.demos import expert_episode

    out, kind, split, seed, sample_every, quality, noise_rad, cameras, more_phrasings, randomise = job
    from nanovla_ros.sim.perturbation import RandomisationConfig

    episode = expert_episode(_WORKER["workcell"], kind, split, seed, sample_every, noise_rad=noise_rad, cameras=cameras,
                             more_phrasings=more_phrasings, randomisation=RandomisationConfig() if randomise else None)
    name = episode_name(kind, split, seed)
    if episode["success"]:
        write_shard(Path(out) / "shards" / f"{name}.npz", episode, quality)
    return name, episode["success"]


def run_collect_in_process(out_dir: str, kinds: list[str], episodes: int, split: str = "train", first_seed: int = 0,
                           workers: int = 1, sample_every: int = 4, jpeg_quality: int = 80, noise_rad: float = 0.0,
                           cameras: tuple[str, ...] = ("front",), more_phrasings: bool = False,
                           randomise: bool = False) -> int:
    """The fast path: expert episodes in process, written straight as training shards (successful ones).
    ``noise_rad`` > 0 perturbs the executed commands (``nanovla_ros.sim.demos``: DART noise injection);
    ``more_phrasings``: training tasks said with the training-only phrasings as well (``tasks.rephrased``);
    ``randomise``: each episode in a workcell perturbed within ``RandomisationConfig``'s ranges."""
    import multiprocessing as mp

    from tqdm import tqdm

    from nanovla_ros.sim.workcell import build_model

    shards = Path(out_dir) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, k, split, s, sample_every, jpeg_quality, noise_rad, tuple(cameras), more_phrasings, randomise)
            for k in kinds
            for s in range(first_seed, first_seed + episodes) if not (shards / f"{episode_name(k, split, s)}.npz").exists()]
    build_model()  # decimated meshes cached once, before the workers start
    results = []
    with mp.get_context("spawn").Pool(max(1, workers), _init_worker) as pool:
        for _, ok in tqdm(pool.imap_unordered(_one_episode, jobs), total=len(jobs), desc="expert episodes"):
            results.append(ok)
    print(f"[collect] {len(results)} in-process episodes: {sum(results)} succeeded and were written to {shards}")
    return 0


def _init_dagger_worker(checkpoint: str, embeddings: dict, device: str) -> None:
    import torch

    from nanovla_ros.model.checkpoint import load_checkpoint
    from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
    from nanovla_ros.sim.workcell import Workcell

    torch.set_num_threads(1)
    model, _ = load_checkpoint(checkpoint, device)
    _WORKER.update(workcell=Workcell(), policy=NanoVLAPolicy(model).to(device), embeddings=embeddings)


def _one_dagger_episode(job: tuple) -> tuple[str, str]:
    """Runs and writes one DAgger episode; returns (task kind, how far the policy got)."""
    from nanovla_ros.data.demos import write_shard
    from nanovla_ros.evaluation.dagger import dagger_episode

    out, kind, split, seed, sample_every, quality, label_steps, execute_steps, randomise = job
    episode = dagger_episode(_WORKER["workcell"], _WORKER["policy"], _WORKER["embeddings"], kind, split, seed,
                             execute_steps=execute_steps, sample_every=sample_every, label_steps=label_steps,
                             randomise=randomise)
    name = f"dagger_{episode_name(kind, split, seed)}"
    write_shard(Path(out) / "shards" / f"{name}.npz", episode, quality)
    return kind, episode["metadata"]["policy_stage"]


def run_collect_dagger(out_dir: str, checkpoint: str, kinds: list[str], episodes: int, split: str = "train",
                       first_seed: int = 0, workers: int = 1, sample_every: int = 6, device: str = "cpu",
                       table_dir: str | None = None, jpeg_quality: int = 80, label_steps: int = 50,
                       execute_steps: int | None = None, randomise: bool = False) -> int:
    """DAgger episodes (``nanovla_ros.evaluation.dagger``): ``checkpoint`` drives, executing ``execute_steps`` actions of
    each chunk (None: what the checkpoint declares, as it is deployed), the expert labels every
    ``sample_every``-th state with its own chunk; every episode is written (failures are the point).
    ``randomise``: each episode in a workcell drawn from ``RandomisationConfig`` by its seed."""
    import json
    import multiprocessing as mp

    from tqdm import tqdm

    from nanovla_ros.evaluation.closed_loop import instruction_embeddings
    from nanovla_ros.model.checkpoint import checkpoint_execute_steps, read_metadata
    from nanovla_ros.sim.workcell import build_model

    shards = Path(out_dir) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    language_id = json.loads(read_metadata(checkpoint)["config"])["language_encoder_id"]
    execute_steps = execute_steps or checkpoint_execute_steps(checkpoint)
    embeddings = instruction_embeddings(language_id, table_dir)
    jobs = [(out_dir, k, split, s, sample_every, jpeg_quality, label_steps, execute_steps, randomise) for k in kinds
            for s in range(first_seed, first_seed + episodes)
            if not (shards / f"dagger_{episode_name(k, split, s)}.npz").exists()]
    build_model()
    stages: dict[str, Counter] = defaultdict(Counter)  # kind -> how far the policy got (sim.outcome) -> episodes
    with mp.get_context("spawn").Pool(max(1, workers), _init_dagger_worker, (checkpoint, embeddings, device)) as pool:
        for kind, stage in tqdm(pool.imap_unordered(_one_dagger_episode, jobs), total=len(jobs),
                                desc="DAgger episodes"):
            stages[kind][stage] += 1
    print(f"[collect] {sum(sum(by.values()) for by in stages.values())} DAgger episodes written to {shards}; "
          f"the policy succeeded in {sum(by['success'] for by in stages.values())}")
    for kind, by in sorted(stages.items()):
        print(f"[collect]   {kind}: " + ", ".join(f"{stage} {n}" for stage, n in by.most_common()))
    return 0
