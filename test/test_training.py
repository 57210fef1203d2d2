"""Training on cached features (tiny configuration, CPU), resume, and the closed-loop harness."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import AnyInstruction, StillPolicy
from test_dataset import write_episode

from nanovla_ros.configuration import ConfigError
from nanovla_ros.data.demos import build_dataset
from nanovla_ros.evaluation.closed_loop import run_policy_episode, summarise, wilson_interval
from nanovla_ros.model.checkpoint import declared_execute_steps, load_checkpoint, read_metadata
from nanovla_ros.model.feature_cache import write_instruction_table
from nanovla_ros.model.modeling_nanovla import language_statistics
from nanovla_ros.training.config import TrainConfig
from nanovla_ros.training.pipeline import cache_dir_of, export_checkpoint, fine_tune_defaults, run_training

TABLE_ID = "all-MiniLM-L6-v2@test/mean-l2"


def touch_episode_recording(workcell, policy, embedding: np.ndarray, **kwargs):
    """Run the harness's touch episode of seed 1000; return its result, its instruction and the joint targets sent
    to the workcell at each control step, (steps, 6)."""
    from nanovla_ros.demo import scene_task

    instruction, sent, step = scene_task("touch", 1000).instruction, [], workcell.step
    workcell.step = lambda targets: (sent.append(np.array(targets)), step(targets))
    try:
        result = run_policy_episode(workcell, policy, {instruction: embedding}, "touch", "train", 1000, **kwargs)
    finally:
        workcell.step = step
    return result, instruction, np.array(sent)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    texts = ["touch the red cube", "touch the blue cube"]
    for i in range(4):
        write_episode(root / "bags" / f"ep{i}", instruction=texts[i % 2], seconds=2.0)
    build_dataset(root / "bags", root / "ds", progress=False)
    rng = np.random.default_rng(0)
    write_instruction_table(cache_dir_of(root / "ds"), TABLE_ID, texts, rng.normal(size=(2, 768)))
    return root


def test_training_writes_checkpoints_validates_and_resumes(dataset, caplog):
    caplog.set_level("INFO")
    out = dataset / "run"
    config = TrainConfig(tiny=True, device="cpu", steps=20, val_every=10, batch_size=8, horizon=16, warmup_steps=5,
                         val_fraction=0.25, select_first_steps=4)
    best = run_training(dataset / "ds", out, config)
    history = json.loads((out / "history.json").read_text())
    assert [v["step"] for v in history["val"]] == [10, 20] and history["val_episodes"] == 1
    assert json.loads(read_metadata(best)["config"])["language_encoder_id"] == TABLE_ID
    model, extra = load_checkpoint(best)
    assert extra["step"] in (10, 20) and model.config.horizon == 16
    # best: the lowest L1 over the chunks' first actions (what the driver executes), logged beside the whole chunk's
    first = [v["l1_first_4"] for v in history["val"]]
    assert extra["step"] == history["val"][int(np.argmin(first))]["step"]
    assert extra["val_selected"]["value"] == min(first) and all(v["l1"] > 0 for v in history["val"])
    # Resume: a longer run continues from step 20, it does not start over.
    run_training(dataset / "ds", out, TrainConfig(**{**config.to_dict(), "steps": 30}))
    assert "resumed at step 20" in caplog.text
    assert [v["step"] for v in json.loads((out / "history.json").read_text())["val"]] == [10, 20, 30]


def test_fine_tuning_keeps_the_model_and_records_where_it_started(dataset, tmp_path):
    config = TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16, warmup_steps=1,
                         val_fraction=0.0, dropout=0.2)
    start = run_training(dataset / "ds", tmp_path / "start", config)
    fine = run_training(dataset / "ds", tmp_path / "fine",
                        TrainConfig(**{**config.to_dict(), "dropout": 0.1, "init_from": str(start), "steps": 3}))
    model, extra = load_checkpoint(fine)
    assert model.config.dropout == 0.2  # the starting checkpoint's model, not TrainConfig's
    assert extra["train"]["init_from"] == str(start) and extra["step"] == 3
    assert extra["init"] == load_checkpoint(start)[1]  # its lineage travels with it (the shipped one was fine-tuned)
    history = json.loads((tmp_path / "fine" / "history.json").read_text())
    assert history["model"]["dropout"] == 0.2 and history["config"]["dropout"] == 0.1  # what ran, and what was asked
    # the h a starting point declares (nanovla export --execute-steps) carries over to its fine-tunes, unless the
    # horizon changes
    declaring = export_checkpoint(start, tmp_path / "start_h8.safetensors", execute_steps=8)
    same = run_training(dataset / "ds", tmp_path / "same",
                        TrainConfig(**{**config.to_dict(), "init_from": str(declaring), "steps": 1}))
    shorter = run_training(dataset / "ds", tmp_path / "shorter",
                           TrainConfig(**{**config.to_dict(), "init_from": str(declaring), "steps": 1, "horizon": 8}))
    assert declared_execute_steps(load_checkpoint(same)[1]) == 8
    assert declared_execute_steps(load_checkpoint(shorter)[1]) == 10  # none declared: the default


def test_a_fixed_chunking_model_fine_tunes_from_a_longer_horizon(dataset, tmp_path):
    """The chunking ablation's fixed arm (trained with H = h) may start from an H_train checkpoint: the first h action
    slots keep their learned positions, and every other weight is the long model's."""
    config = TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16, warmup_steps=1,
                         val_fraction=0.0)
    start = run_training(dataset / "ds", tmp_path / "long", config)
    long_model, _ = load_checkpoint(start)
    short_model = long_model.shorter_horizon(5)
    assert short_model.config.horizon == 5 and short_model.query_pos.weight.shape[0] == 5
    torch.manual_seed(0)
    features = torch.randn(2, long_model.config.image_feature_dim, 3, 3)
    instruction, state = torch.randn(2, long_model.config.language_dim), torch.randn(2, 6)
    with torch.no_grad():
        short_chunk, _ = short_model(features, instruction, state)
    assert short_chunk.shape == (2, 5, 6) and torch.isfinite(short_chunk).all()
    kept = {k: v for k, v in long_model.state_dict().items() if k != "query_pos.weight"}
    assert all(torch.equal(v, short_model.state_dict()[k]) for k, v in kept.items())
    assert torch.equal(short_model.query_pos.weight, long_model.query_pos.weight[:5])
    fine = run_training(dataset / "ds", tmp_path / "fixed5", TrainConfig(**{**config.to_dict(), "horizon": 5,
                                                                         "init_from": str(start)}))
    model, extra = load_checkpoint(fine)
    assert model.config.horizon == 5 and extra["train"]["horizon"] == 5 and extra["init"]["train"]["horizon"] == 16
    # fine-tuning it again through the CLI needs no --horizon (nor --image-size, --cameras): fine_tune_defaults
    from nanovla_ros.cli import main

    assert main(["train", "--data", str(dataset / "ds"), "--out", str(tmp_path / "again"), "--tiny", "--device", "cpu",
                 "--steps", "1", "--val-every", "1", "--batch-size", "4", "--warmup-steps", "1",
                 "--init-from", str(fine)]) == 0
    again, _ = load_checkpoint(sorted((tmp_path / "again").glob("*.safetensors"))[0])
    assert again.config.horizon == 5
    with pytest.raises(ConfigError, match="horizon"):  # a longer chunk than the start's has no positions to keep
        run_training(dataset / "ds", tmp_path / "long32", TrainConfig(**{**config.to_dict(), "horizon": 32,
                                                                       "init_from": str(start)}))


def test_a_model_fine_tunes_at_another_image_size(dataset, tmp_path):
    """A cheaper input for a slow host: the image tokens' positions are a sinusoidal table of the feature grid, so a
    checkpoint's weights all carry over to another --image-size; the fine-tune records the new size and encoder."""
    config = TrainConfig(tiny=True, device="cpu", steps=1, val_every=1, batch_size=4, horizon=8, warmup_steps=1,
                         val_fraction=0.0, image_size=64)
    start = run_training(dataset / "ds", tmp_path / "start", config)
    started, _ = load_checkpoint(start)
    smaller = started.with_image_size(96)
    assert smaller.config.image_size == 96 and smaller.config.image_encoder_id == "efficientnet-lite0@96"
    assert all(torch.equal(v, smaller.state_dict()[k]) for k, v in started.state_dict().items())
    data = tmp_path / "ds"  # its own feature cache: the 96 px features replace the 64 px ones
    shutil.copytree(dataset / "ds", data)
    tuned = run_training(data, tmp_path / "tuned", TrainConfig(**{**config.to_dict(), "init_from": str(start),
                                                                  "image_size": 96}))
    model, extra = load_checkpoint(tuned)
    assert model.config.image_size == 96 and extra["train"]["image_size"] == 96
    assert read_metadata(tuned)["image_encoder_id"] == "efficientnet-lite0@96"
    assert extra["init"]["train"]["image_size"] == 64
    with pytest.raises(ConfigError, match="image_stride"):  # the map its tokens are cells of still has to match
        run_training(data, tmp_path / "s16", TrainConfig(**{**config.to_dict(), "init_from": str(start),
                                                            "image_stride": 16}))


def test_the_closed_loop_harness_runs_a_checkpoint_in_the_workcell(dataset):
    from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
    from nanovla_ros.sim.workcell import Workcell

    best = run_training(dataset / "ds", dataset / "run2",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.0))
    model, _ = load_checkpoint(best)
    policy = NanoVLAPolicy(model)
    workcell = Workcell()
    try:
        result, instruction, sent = touch_episode_recording(workcell, policy, np.ones(768, np.float32) / 20,
                                                            execute_steps=5, max_steps=12)
    finally:
        workcell.close()
    assert result.instruction == instruction and result.steps == 12 and len(result.inference_ms) == 3
    # Like the driver, the harness changes no target by more than max_step_rad per control step (from home).
    steps = np.abs(np.diff(np.vstack([np.zeros(6), *sent]), axis=0))
    assert steps.max() <= 0.05 + 1e-9
    rows = summarise([result, result])
    assert rows[0]["episodes"] == 2 and rows[0]["successes"] == 2 * int(result.success)
    # How far it got (nanovla_ros.sim.outcome): a touch ends in one of its three stages, counted per row.
    assert result.outcome["stage"] in ("success", "touched another cube", "missed")
    assert rows[0]["stages"] == {result.outcome["stage"]: 2} and rows[0]["closest_cm_p50"] > 0


def test_a_model_gains_fine_features_in_a_fine_tune_and_keeps_them(dataset, tmp_path):
    """--fine-features from a checkpoint without them: the run builds the folded cache beside the final map's, starts
    from the checkpoint's weights (the new channels at zero) and saves a model that reads them; a fine-tune of that
    must keep them."""
    from nanovla_ros.model.feature_cache import camera_cache_dir

    config = TrainConfig(tiny=True, device="cpu", steps=1, val_every=1, batch_size=4, horizon=8, warmup_steps=1,
                         val_fraction=0.0, image_size=64)
    start = run_training(dataset / "ds", tmp_path / "start", config)
    data = tmp_path / "ds"  # a copy without the final map's features: the fine run must not need them
    shutil.copytree(dataset / "ds", data)
    for f in ("index.json", "image_features.npy"):
        (cache_dir_of(data) / f).unlink()
    fine_config = TrainConfig(**{**config.to_dict(), "init_from": str(start), "fine_features": True,
                                 "fine_lr_scale": 1.0})
    assert TrainConfig(fine_features=True).fine_lr_scale == 30.0  # the default (FINE_LR_SCALE)
    fine = run_training(data, tmp_path / "fine", fine_config)
    model, extra = load_checkpoint(fine)
    assert model.config.fine_features and model.config.image_feature_dim == 1728 and extra["train"]["fine_features"]
    assert not (cache_dir_of(data) / "index.json").exists()
    index = json.loads((camera_cache_dir(cache_dir_of(data), "front", 32, True) / "index.json").read_text())
    assert index["image_encoder_id"] == "efficientnet-lite0@64+s16" and index["feature_shape"] == [1728, 2, 2]
    started, _ = load_checkpoint(start)
    assert model.image_proj.weight.shape == started.image_proj.weight.shape
    assert model.fine_proj.weight.abs().max() > 0  # learned from the first step
    # the fine cells are standardised with statistics of the training features (raw, they are ~8x the final map's)
    fine_maps = np.load(camera_cache_dir(cache_dir_of(data), "front", 32, True) / "image_features.npy")[:, 1280:]
    np.testing.assert_allclose(model.fine_mean.numpy(), fine_maps.astype(np.float32).mean((0, 2, 3)), rtol=1e-3,
                               atol=1e-3)
    assert (model.fine_std.numpy() > 0).all()
    history = json.loads((tmp_path / "fine" / "history.json").read_text())
    assert history["model"]["fine_features"]
    # --fine-lr-scale: the fine cells' projection takes steps that much larger (one AdamW step from zero moves each
    # weight by its lr), the rest of the model alike
    fast = run_training(data, tmp_path / "fast", TrainConfig(**{**fine_config.to_dict(), "fine_lr_scale": 10.0}))
    fast_model, _ = load_checkpoint(fast)
    np.testing.assert_allclose(fast_model.fine_proj.weight.abs().max().item(),
                               10 * model.fine_proj.weight.abs().max().item(), rtol=0.02)
    np.testing.assert_allclose(fast_model.image_proj.weight.detach().numpy(), model.image_proj.weight.detach().numpy(),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="fine_lr_scale"):
        TrainConfig(fine_lr_scale=10.0)
    with pytest.raises(ConfigError, match="fine_features"):  # the fine channels cannot be dropped again
        run_training(data, tmp_path / "coarse", TrainConfig(**{**config.to_dict(), "init_from": str(fine)}))
    # `nanovla train --init-from` without the flag: a fine-tune reads what its starting point reads
    assert fine_tune_defaults({"init_from": str(fine)}) == {
        "init_from": str(fine), "horizon": 8, "fine_features": True, "cameras": ("front",), "image_size": 64,
        "image_stride": 32, "variant": "s"}
    assert fine_tune_defaults({"init_from": str(start), "horizon": 4})["fine_features"] is False
    assert fine_tune_defaults({"init_from": str(fine), "fine_features": False})["fine_features"] is False
    with pytest.raises(ConfigError, match="image_stride"):
        TrainConfig(fine_features=True, image_stride=16)


def test_image_size_reaches_the_cache_and_the_checkpoint(dataset, tmp_path):
    import shutil

    from nanovla_ros.configuration import ConfigError

    shutil.copytree(dataset / "ds", tmp_path / "ds")  # its own cache: the module's stays at 224 px
    best = run_training(tmp_path / "ds", tmp_path / "run",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.0, image_size=96, dropout=0.2))
    index = json.loads((cache_dir_of(tmp_path / "ds") / "index.json").read_text())
    assert index["image_encoder_id"] == "efficientnet-lite0@96" and index["feature_shape"][1:] == [3, 3]
    model, _ = load_checkpoint(best)
    assert model.config.image_size == 96 and model.config.dropout == 0.2
    with pytest.raises(ConfigError, match="image_size=16"):
        TrainConfig(image_size=16)

    fine = run_training(tmp_path / "ds", tmp_path / "run16",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.0, image_size=96, image_stride=16, language_film=True))
    index16 = json.loads((cache_dir_of(tmp_path / "ds") / "s16" / "index.json").read_text())
    assert index16["image_encoder_id"] == "efficientnet-lite0@96/s16" and index16["feature_shape"] == [112, 6, 6]
    assert json.loads((cache_dir_of(tmp_path / "ds") / "index.json").read_text()) == index  # side by side
    assert load_checkpoint(fine)[0].config.image_stride == 16 and load_checkpoint(fine)[0].config.language_film
    trained = load_checkpoint(best)[0]
    assert not trained.config.language_film  # TrainConfig's default
    assert trained.language_mean.abs().sum() > 0 and torch.all(trained.language_std > 0)  # from the training episodes


def test_wilson_interval():
    low, high = wilson_interval(8, 10)
    assert abs(low - 0.490) < 0.002 and abs(high - 0.943) < 0.002
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] > 0.92


def test_a_wrist_camera_model_trains_from_in_process_shards(dataset, tmp_path):
    from nanovla_ros.data.demos import DatasetError, load_demonstrations, write_shard
    from nanovla_ros.sim.demos import expert_episode
    from nanovla_ros.sim.workcell import Workcell

    for folder in ("ds", "front"):
        (tmp_path / folder / "shards").mkdir(parents=True)
    workcell = Workcell()
    try:
        for seed in (0, 1):
            episode = expert_episode(workcell, "touch", "train", seed, sample_every=15, image_size=64, max_steps=45,
                                     cameras=("front", "wrist"))
            assert len(episode["camera_frames"]["wrist"]) == len(episode["frames"])
            write_shard(tmp_path / "ds" / "shards" / f"ep{seed}.npz", episode, 80)
        front_only = expert_episode(workcell, "touch", "train", 2, sample_every=15, image_size=64, max_steps=45)
        write_shard(tmp_path / "front" / "shards" / "ep2.npz", front_only, 80)
    finally:
        workcell.close()
    demos = load_demonstrations(tmp_path / "ds", cameras=("front", "wrist"))
    assert len(demos.frames_of("wrist")) == len(demos.frames)
    assert demos.task_xy_m.shape == (len(demos.states), 4) and np.isfinite(demos.task_xy_m).all()  # simulated: recorded
    assert demos.cubes_xy_m.shape == (len(demos.states), 6) and np.isfinite(demos.cubes_xy_m).all()
    named = demos.cubes_xy_m.reshape(-1, 3, 2)[np.arange(len(demos.states)), demos.named_cube[demos.episode]]
    np.testing.assert_allclose(named, demos.task_xy_m[:, :2])  # the instruction's cube among all of them
    bags = load_demonstrations(dataset / "ds")
    assert np.isnan(bags.task_xy_m).all() and (bags.named_cube == -1).all()  # bags of a real arm: unknown
    assert np.abs(demos.frames_of("wrist")[0].astype(int) - demos.frames[0]).mean() > 5  # another view, not a copy
    texts = sorted(set(demos.instructions))
    write_instruction_table(cache_dir_of(tmp_path / "ds"), TABLE_ID, texts, np.ones((len(texts), 768)))
    best = run_training(tmp_path / "ds", tmp_path / "run",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.0, image_size=64, cameras=("front", "wrist")))
    assert (cache_dir_of(tmp_path / "ds") / "cameras" / "wrist" / "index.json").is_file()
    model, _ = load_checkpoint(best)
    assert model.config.cameras == ("front", "wrist")
    # The auxiliary task head trains from the recorded positions and reports its error at validation.
    head = run_training(tmp_path / "ds", tmp_path / "run_task",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.5, image_size=64, cameras=("front", "wrist"),
                                    task_loss_weight=1.0))
    history = json.loads((tmp_path / "run_task" / "history.json").read_text())
    assert history["val"][-1]["task_cube_cm"] > 0 and history["val"][-1]["query_cube_cm"] > 0
    assert history["val"][-1]["task_goal_cm"] > 0 and history["val"][-1]["query_goal_cm"] > 0  # touch: the cube
    assert 0 <= history["val"][-1]["query_nearest"] <= 1
    assert load_checkpoint(head)[0].task_std.min() > 0
    # --task-token from that checkpoint: the head's answer starts the action slots, its projection learning at
    # task_token_lr_scale times lr from zero (one AdamW step moves each weight by its lr)
    token = run_training(tmp_path / "ds", tmp_path / "run_token",
                         TrainConfig(tiny=True, device="cpu", steps=1, val_every=1, batch_size=4, horizon=16,
                                     warmup_steps=1, val_fraction=0.5, image_size=64, cameras=("front", "wrist"),
                                     task_loss_weight=1.0, init_from=str(head), task_token=True, lr=1e-3))
    token_model = load_checkpoint(token)[0]
    assert token_model.config.task_token
    np.testing.assert_allclose(token_model.task_token_proj.weight.abs().max().item(), 30 * 1e-3, rtol=0.05)
    from nanovla_ros.configuration import ConfigError

    with pytest.raises(ConfigError, match="task_xy_m"):  # bags without positions cannot train the head
        run_training(dataset / "ds", tmp_path / "run_bags",
                     TrainConfig(tiny=True, device="cpu", steps=2, batch_size=4, horizon=16, warmup_steps=1,
                                 val_fraction=0.0, task_loss_weight=1.0))
    with pytest.raises(DatasetError, match="no frames of camera 'wrist'.*--cameras front wrist"):
        load_demonstrations(tmp_path / "front", cameras=("front", "wrist"))


def test_goal_queries_ask_where_another_instructions_goal_is_in_each_scene(tmp_path):
    """The task head's queries now ask for the goal too: a pick-and-place instruction's square, a stacking
    instruction's other cube, a touch's cube, in another episode's scene (without goal queries the head bound the goal
    loosely: nearest the named square in 28 of 40 scenes, 6.5 cm off); a push's goal is unknown."""
    from nanovla_ros.data.demos import SQUARE_QUERY_COLOURS, load_demonstrations, write_shard
    from nanovla_ros.sim.demos import expert_episode
    from nanovla_ros.sim.workcell import CUBE_COLOURS, SQUARE_COLOURS, Workcell
    from nanovla_ros.training.trainer import DeviceBatches

    assert SQUARE_QUERY_COLOURS == tuple(SQUARE_COLOURS)  # the data module's copy (it does not import the sim)
    (tmp_path / "shards").mkdir()
    workcell = Workcell()
    try:
        for seed, kind in enumerate(("pick_place", "stack", "touch", "push")):
            episode = expert_episode(workcell, kind, "train", seed, sample_every=10, image_size=32, max_steps=20)
            write_shard(tmp_path / "shards" / f"{seed}_{kind}.npz", episode, 80)
    finally:
        workcell.close()
    demos = load_demonstrations(tmp_path)
    kinds = [m["task_kind"] for m in demos.meta]
    assert np.isfinite(demos.squares_xy_m).all()  # simulated episodes record their squares
    batches = DeviceBatches(demos, np.zeros((len(demos.frames), 1, 1, 1), np.float32), np.zeros((4, 8), np.float32),
                            np.arange(4), 4, torch.device("cpu"))
    cubes = demos.cubes_xy_m.reshape(len(demos.states), -1, 2)
    for i in range(len(demos.states)):  # every scene, asked every instruction
        for q, meta in enumerate(demos.meta):
            goal = batches.query_goal(torch.tensor([i]), torch.tensor([q]))[0].numpy()
            scene_squares = demos.squares_xy_m[demos.episode[i]]
            expected = {"pick_place": scene_squares[SQUARE_QUERY_COLOURS.index(meta["target"])] if kinds[q] ==
                        "pick_place" else None,
                        "stack": cubes[i, list(CUBE_COLOURS).index(meta["target"])] if kinds[q] == "stack" else None,
                        "touch": cubes[i, list(CUBE_COLOURS).index(meta["cube"])],
                        "push": np.full(2, np.nan)}[kinds[q]]
            np.testing.assert_allclose(goal, expected, atol=1e-6)
    batch = batches.batch(torch.arange(len(demos.states)), torch.Generator().manual_seed(0))
    assert batch["query_xy_m"].shape == (len(demos.states), 4)  # the queried cube's x, y and its goal's


def test_the_harness_delays_chunks_by_latency_steps_and_executes_them_time_aligned():
    """latency_steps L: the arm holds until the first chunk arrives at step L, then runs it from index L, as the
    driver runs a late chunk; L = 0 runs index 0 at once."""
    from nanovla_ros.sim.workcell import Workcell

    class Ramp:  # chunk index i -> every joint at 0.001 * (i + 1) rad from where the state was
        class config:
            cameras, horizon = ("front",), 30

        def predict_chunk(self, image, state, embedding):
            return state[None] + 0.001 * np.arange(1, 31, dtype=np.float32)[:, None].repeat(6, axis=1)

    workcell = Workcell()
    try:
        for latency in (0, 4):
            _, _, sent = touch_episode_recording(workcell, Ramp(), np.zeros(768, np.float32), execute_steps=10,
                                                 max_steps=12, latency_steps=latency)
            np.testing.assert_allclose(sent[:latency], 0.0)  # held at home until the chunk arrives
            np.testing.assert_allclose(sent[latency], 0.001 * (latency + 1), atol=1e-6)  # index L first
    finally:
        workcell.close()


def test_the_harness_moves_the_arm_through_the_drivers_executor():
    """The in-process harness executes chunks as the driver does: calibrated joint limits and the per-step limit
    apply (a chunk a little past the range ends at the limit, reached at max_step_rad per step), and a chunk far
    outside the range is refused (the arm holds)."""
    from nanovla_ros.driver.config import DriverConfig
    from nanovla_ros.sim.servo_bridge import sim_calibration
    from nanovla_ros.sim.workcell import Workcell

    class Constant:
        class config:
            cameras, horizon = ("front",), 30

        def __init__(self, target):
            self.target = target

        def predict_chunk(self, image, state, embedding):
            return np.tile(self.target, (30, 1)).astype(np.float32)

    workcell = Workcell()
    try:
        home = workcell.joint_positions.copy()
        upper = np.array([hi for _, hi in sim_calibration(workcell).limits_rad(DriverConfig().joint_names)])
        past = upper + 0.5 * DriverConfig().limit_margin_rad
        _, _, sent = touch_episode_recording(workcell, Constant(past), np.zeros(768, np.float32), execute_steps=10,
                                             max_steps=90)
        assert np.all(sent <= upper + 1e-9) and np.allclose(sent[-1], upper)
        steps = np.abs(np.diff(np.vstack([home, sent]), axis=0))
        assert steps.max() <= DriverConfig().max_step_rad + 1e-9
        _, _, held = touch_episode_recording(workcell, Constant(np.full(6, 10.0)), np.zeros(768, np.float32),
                                             execute_steps=10, max_steps=30)
        assert np.allclose(held, held[0], atol=1e-9)  # 10 rad: refused, the arm holds where the episode began
    finally:
        workcell.close()


def test_the_gripper_weight_and_kind_weights_shape_the_loss_and_the_batches(dataset, tmp_path):
    """``gripper_loss_weight`` weighs the last action dimension in the reconstruction loss (divided by the weights'
    sum); ``kind_weights`` draws the samples of a task kind more often, and a kind no episode has is refused."""
    from nanovla_ros.data.demos import load_demonstrations
    from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
    from nanovla_ros.model.modeling_nanovla import NanoVLA
    from nanovla_ros.training.trainer import TINY, kind_sample_weights

    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=8, horizon=4, **TINY)).eval()  # eval: z = mu, no dropout
    features = torch.randn(3, model.config.image_feature_dim, 3, 3)
    instruction, state, actions = torch.randn(3, 8), torch.randn(3, 6), torch.randn(3, 4, 6)
    with torch.no_grad():
        pred_n, plain = model(features, instruction, state, actions)
        _, ones = model(features, instruction, state, actions, action_weight=torch.ones(6))
        weight = torch.tensor([1.0, 1, 1, 1, 1, 3])
        _, gripper = model(features, instruction, state, actions, action_weight=weight)
    err = (pred_n - (actions - model.action_mean) / model.action_std).abs()  # (B, H, A)
    assert torch.allclose(ones["recon"], plain["recon"])
    assert torch.allclose(gripper["recon"], (err * weight).sum() / (err[..., 0].numel() * weight.sum()))
    assert not torch.allclose(gripper["recon"], plain["recon"])

    demos = load_demonstrations(dataset / "ds")
    demos.meta[1] = {**demos.meta[1], "task_kind": "stack"}
    episodes = np.arange(len(demos.instructions))
    samples_of = lambda e: np.count_nonzero(demos.episode == e)  # noqa: E731
    w = kind_sample_weights(demos, episodes, {"stack": 3.0})
    assert w is not None and len(w) == len(demos.episode)
    assert np.count_nonzero(w == 3.0) == samples_of(1) and np.count_nonzero(w == 1.0) == len(w) - samples_of(1)
    assert kind_sample_weights(demos, episodes, {}) is None
    with pytest.raises(ConfigError, match="stak"):
        kind_sample_weights(demos, episodes, {"stak": 2.0})
    for bad in (("stack",), ("stack=x",), ("stack=-1",), ("stack=1", "stack=2")):
        with pytest.raises(ConfigError):
            TrainConfig(kind_weights=bad)
    with pytest.raises(ConfigError, match="gripper_loss_weight"):
        TrainConfig(gripper_loss_weight=0.0)
    # both through a training run; the options are recorded in the checkpoint
    config = TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=8, warmup_steps=1,
                         val_fraction=0.0, gripper_loss_weight=3.0, kind_weights=("touch=2",))
    _, extra = load_checkpoint(run_training(dataset / "ds", tmp_path / "weighted", config))
    assert extra["train"]["gripper_loss_weight"] == 3.0 and extra["train"]["kind_weights"] == ["touch=2"]
    with pytest.raises(ConfigError, match="no training episode"):
        run_training(dataset / "ds", tmp_path / "typo", TrainConfig(**{**config.to_dict(), "kind_weights": ("stak=2",)}))


def test_a_model_moves_to_another_language_encoder_and_keeps_what_it_computed(dataset, tmp_path):
    """NanoVLA-S -> -L (`nanovla train --variant l --init-from S --refit-language`): every weight but those reading
    the instruction is kept, and those are fitted so that the new encoder's vectors of the training instructions
    give the tokens the old one's gave, so the new model starts out computing what the old one did on them."""
    from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
    from nanovla_ros.model.modeling_nanovla import NanoVLA

    torch.manual_seed(0)
    tiny = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=8, latent_dim=8,
                image_size=64)
    old = NanoVLA(NanoVLAConfig(language_dim=48, language_encoder_id="old-encoder", language_film=True, **tiny))
    with torch.no_grad():  # FiLM starts at zero: give it weights, so that its refit is checked too
        old.film.weight.normal_(0.0, 0.05)
    rng = np.random.default_rng(1)
    old_vectors, new_vectors = rng.normal(size=(6, 48)), rng.normal(size=(6, 16))  # six training instructions
    old.set_normalization(None, None, None, None, *language_statistics(old_vectors))
    old.eval()
    new = old.with_other_language_encoder("new-encoder", new_vectors, old_vectors, ridge=1e-8)
    assert new.config.language_dim == 16 and new.config.language_encoder_id == "new-encoder"
    assert new.language_proj.weight.shape == (32, 16) and new.film.weight.shape == (64, 16)
    kept = {k for k in old.state_dict() if not k.startswith(("language_", "film."))}
    assert kept and all(torch.equal(old.state_dict()[k], new.state_dict()[k]) for k in kept)
    np.testing.assert_allclose(new.language_mean.numpy(), new_vectors.mean(0), rtol=1e-5, atol=1e-6)
    features = torch.randn(6, old.config.image_feature_dim, 2, 2)
    state = torch.randn(6, 6)
    with torch.no_grad():
        before, _ = old(features, torch.as_tensor(old_vectors, dtype=torch.float32), state)
        after, _ = new(features, torch.as_tensor(new_vectors, dtype=torch.float32), state)
        unrelated, _ = new(features, torch.as_tensor(rng.normal(size=(6, 16)), dtype=torch.float32), state)
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-3)
    assert (unrelated - before).abs().max() > 0.05  # it reads the new vectors: other ones give other chunks
    with pytest.raises(ConfigError, match="pair"):
        old.with_other_language_encoder("new-encoder", new_vectors[:5], old_vectors)

    # through run_training: an S checkpoint fine-tuned as an L, on the run's cached tables of both encoders
    config = TrainConfig(tiny=True, device="cpu", steps=1, val_every=1, batch_size=4, horizon=8, warmup_steps=1,
                         val_fraction=0.0)
    start = run_training(dataset / "ds", tmp_path / "s", config)
    data = tmp_path / "ds"
    shutil.copytree(dataset / "ds", data)
    texts = ["touch the red cube", "touch the blue cube"]
    write_instruction_table(cache_dir_of(data), "gemma-3-270m@test/mean", texts, rng.normal(size=(2, 640)))
    as_l = {**config.to_dict(), "variant": "l", "init_from": str(start)}
    with pytest.raises(ConfigError, match="language_encoder_id"):  # without the refit: a clear refusal
        run_training(data, tmp_path / "l0", TrainConfig(**as_l))
    model, extra = load_checkpoint(run_training(data, tmp_path / "l", TrainConfig(**{**as_l, "refit_language": True})))
    assert model.config.language_dim == 640 and model.config.language_encoder_id == "gemma-3-270m@test/mean"
    assert extra["train"]["refit_language"] and extra["init"]["train"]["variant"] == "s"
    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig(refit_language=True)


def test_cli_flags_are_the_config_fields():
    """`nanovla train` and `nanovla dataset` take one flag per field of their config dataclass (help from the field),
    so a new option is declared once; a value the config refuses is refused on the command line the same way."""
    import dataclasses

    from nanovla_ros.cli import build_parser, cmd_train
    from nanovla_ros.configuration import config_values
    from nanovla_ros.data.config import DatasetBuildConfig

    parser = build_parser()
    for command, config_cls in (("train", TrainConfig), ("dataset", DatasetBuildConfig)):
        sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and command in a.choices)
        flags = {o for a in sub.choices[command]._actions for o in a.option_strings}
        assert {"--" + f.name.replace("_", "-") for f in dataclasses.fields(config_cls)} <= flags, command
    args = parser.parse_args(["train", "--horizon", "40", "--execute-steps", "20", "--cameras", "front", "wrist",
                              "--no-bf16"])
    assert config_values(args, TrainConfig) == {"horizon": 40, "execute_steps": 20, "cameras": ("front", "wrist"),
                                               "bf16": False}
    with pytest.raises(ConfigError, match="execute_steps=50 must be within"):
        TrainConfig(horizon=40, execute_steps=50)
    assert cmd_train(parser.parse_args(["train", "--horizon", "40", "--execute-steps", "50"])) == 1


def test_bank_phrasings_give_each_sample_one_of_its_tasks_sentences(tmp_path):
    """``phrasings: bank``: each training sample's instruction is drawn from its episode's own and the phrasing
    bank's training-family sentences of the same task (``phrasing_rows``); validation keeps the episode's own."""
    from types import SimpleNamespace

    from nanovla_ros import phrasings
    from nanovla_ros.training.pipeline import phrasing_rows
    from nanovla_ros.training.trainer import DeviceBatches

    own = "the episode's own instruction for the red cube"
    bank_sentences = phrasings.sentences_of("touch", "red", "")
    assert len(bank_sentences) > 100 and own not in bank_sentences
    texts = [own, "tap the blue block"] + bank_sentences
    table = np.random.default_rng(0).normal(size=(len(texts), 8)).astype(np.float32)
    write_instruction_table(tmp_path, TABLE_ID, texts, table)
    demos = SimpleNamespace(instructions=[own, "tap the blue block"],
                            meta=[{"task_kind": "touch", "cube": "red", "target": ""}, {}])  # the 2nd: a real bag's
    table_back, rows = phrasing_rows(demos, tmp_path, TABLE_ID)
    assert rows[0][0] == 0 and len(rows[0]) == 1 + len(bank_sentences) and rows[1].tolist() == [1]
    with pytest.raises(ConfigError, match="no .* vector in the cache"):
        write_instruction_table(tmp_path, TABLE_ID, texts[:50], table[:50])
        phrasing_rows(demos, tmp_path, TABLE_ID)

    episode = np.array([0, 0, 0, 1, 1])
    fake = SimpleNamespace(episode=episode, frame_index=np.arange(5), states=np.zeros((5, 6)),
                           actions=np.zeros((5, 6)), action_index=np.arange(5), action_end=np.array([2, 2, 2, 4, 4]),
                           task_xy_m=None, cubes_xy_m=None, named_cube=None, goal_cube=None, goal_square=None,
                           squares_xy_m=None, instructions=demos.instructions)
    batches = DeviceBatches(fake, np.zeros((5, 1, 1, 1), np.float32), table_back[:2], np.arange(2), 4,
                            torch.device("cpu"), table_back, rows)
    idx = torch.tensor([0, 1, 2, 3, 4] * 40)
    drawn = batches.batch(idx, rephrase=torch.Generator().manual_seed(0))["instruction"].numpy()
    first = {tuple(np.round(v, 5)) for v in drawn[idx.numpy() < 3]}
    assert len(first) > 20  # many sentences of the task, not one
    allowed = {tuple(np.round(table_back[r], 5)) for r in rows[0]}
    assert first <= allowed
    assert np.allclose(drawn[idx.numpy() >= 3], table_back[1])  # an episode without task metadata keeps its own
    assert np.allclose(batches.batch(idx)["instruction"].numpy()[idx.numpy() < 3], table_back[0])  # no rephrase
    varied = DeviceBatches(fake, np.zeros((5, 1, 1, 1), np.float32), table_back[:2], np.arange(2), 4,
                           torch.device("cpu"), augmented=[np.ones((5, 1, 1, 1), np.float32)])
    seen = varied.batch(idx, augment=torch.Generator().manual_seed(0))["image_features"].flatten().unique().tolist()
    assert seen == [0.0, 1.0]  # the plain features and the augmented copy, drawn per sample
    assert varied.batch(idx)["image_features"].flatten().unique().tolist() == [0.0]  # validation: plain only


def test_the_harness_says_tasks_with_the_bank_s_families_of_the_split():
    from nanovla_ros import phrasings
    from nanovla_ros.sim.workcell import Workcell

    workcell = Workcell()
    try:
        train_bank = {row[0] for row in phrasings.bank("train")}
        for split in ("train", "heldout"):
            result = run_policy_episode(workcell, StillPolicy(), AnyInstruction(), "stack", split, 1000, 10, max_steps=2,
                                        phrasings="bank")
            template = run_policy_episode(workcell, StillPolicy(), AnyInstruction(), "stack", split, 1000, 10, max_steps=2)
            assert (result.instruction in train_bank) == (split == "train"), result.instruction
            assert result.instruction != template.instruction
    finally:
        workcell.close()


def test_augmented_feature_copies_are_cached_once_and_drawn_in_training(dataset, tmp_path):
    """``augment_copies`` K: K augmented copies of every frame's features cached beside the plain ones (colour,
    shift, rotation, noise before the frozen encoder), and training draws among the K + 1 per sample."""
    from nanovla_ros.model.augment import AugmentConfig, augment_frames
    from nanovla_ros.model.configuration_nanovla import image_encoder_id
    from nanovla_ros.model.feature_cache import load_camera_features

    frames = torch.full((4, 32, 32, 3), 128, dtype=torch.uint8)
    frames[:, 8:24, 8:24] = 200
    once = augment_frames(frames, torch.Generator().manual_seed(1))
    assert once.shape == frames.shape and once.dtype == torch.uint8 and not torch.equal(once, frames)
    assert torch.equal(once, augment_frames(frames, torch.Generator().manual_seed(1)))  # seeded: reproducible
    assert not torch.equal(once[0], once[1])  # each frame its own draw
    with pytest.raises(ConfigError, match="brightness"):
        AugmentConfig(brightness=1.5)

    data = tmp_path / "ds"
    shutil.copytree(dataset / "ds", data)
    config = TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16, warmup_steps=1,
                         val_fraction=0.0, augment_copies=2)
    run_training(data, tmp_path / "run", config)
    encoder = image_encoder_id("efficientnet-lite0", 224, 32, False)
    from nanovla_ros.data.demos import load_demonstrations

    frames_n = len(load_demonstrations(data).frames)
    plain = np.asarray(load_camera_features(cache_dir_of(data), "front", frames_n, encoder))
    copy1 = np.asarray(load_camera_features(cache_dir_of(data), "front", frames_n, encoder, copy=1))
    copy2 = np.asarray(load_camera_features(cache_dir_of(data), "front", frames_n, encoder, copy=2))
    assert plain.shape == copy1.shape == copy2.shape
    assert np.abs(copy1.astype(np.float32) - plain).mean() > 1e-3 and not np.array_equal(copy1, copy2)


def test_instruction_noise_scales_with_each_vectors_rms():
    """``instruction_noise``: each row gets Gaussian noise of std ``scale`` x its own rms (a short vector is not
    drowned, a long one is not left untouched); 0 leaves training's instructions as they are."""
    from nanovla_ros.training.trainer import noisy_instructions

    vectors = torch.cat([torch.full((1, 4096), 0.01), torch.full((1, 4096), 3.0)])
    noisy = noisy_instructions(vectors, 0.5, torch.Generator().manual_seed(0))
    std = (noisy - vectors).std(dim=1)
    assert torch.allclose(std, torch.tensor([0.005, 1.5]), rtol=0.05)
    assert torch.allclose((noisy - vectors).mean(dim=1), torch.zeros(2), atol=0.05 * std.max())
    with pytest.raises(ConfigError, match="instruction_noise"):
        TrainConfig(instruction_noise=-0.1)


def test_the_robustness_suite_runs_every_condition_on_the_same_seeds_and_reports_them(dataset, tmp_path):
    from nanovla_ros.evaluation.robustness import TASKS, conditions, run_suite
    from nanovla_ros.tasks import all_instructions

    best = run_training(dataset / "ds", dataset / "suite",
                        TrainConfig(tiny=True, device="cpu", steps=2, val_every=2, batch_size=4, horizon=16,
                                    warmup_steps=1, val_fraction=0.0))
    texts = sorted(all_instructions())
    write_instruction_table(tmp_path / "tables", TABLE_ID, texts, np.random.default_rng(1).normal(size=(len(texts), 768)))
    assert conditions(["light", "distractors"], "plausible") == ["", "light=0.5", "light=0.6", "light=1.4",
                                                                  "light=1.6", "distractors=1", "distractors=2"]
    summary = run_suite(str(best), str(tmp_path / "out"), ["table", "distractors"], "all", episodes=1, progress=False,
                        execute_steps=2, max_steps=3, table_dir=str(tmp_path / "tables"))
    rows = summary["rows"]
    assert [r["condition"] for r in rows] == ["none", "table=0.8", "table=0.6", "distractors=1", "distractors=2",
                                              "distractors=3"]
    assert all(r["episodes"] == len(TASKS) and set(r["per_task"]) == set(TASKS) for r in rows)
    assert [r["plausible"] for r in rows] == [True, True, False, True, True, False]  # the last strength: beyond
    saved = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert saved["rows"] == rows and saved["episodes_per_task"] == 1
    table = (tmp_path / "out" / "robustness.md").read_text()
    assert "| distractors=3 (beyond) | " in table and (tmp_path / "out" / "robustness.png").stat().st_size > 10_000
