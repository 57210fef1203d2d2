"""The checkpoint that ships with the package (what `make demo` runs): self-describing, small, and a policy that
heads for the cube its instruction names (the failure that runs 6-12 had: README, diagnosis 7 and 8)."""
import json
from pathlib import Path

import numpy as np
import torch

import nanovla_ros.sim  # noqa: F401  (chooses the headless GL before mujoco is imported)
from nanovla_ros.graph import SHIPPED_CHECKPOINT
from nanovla_ros.language.encoders import encoder_id, load_encoder
from nanovla_ros.model.checkpoint import declared_execute_steps, load_checkpoint, read_metadata
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.sim.tasks import sample_layout
from nanovla_ros.sim.workcell import CUBE_COLOURS, Workcell


def test_the_shipped_checkpoint_is_fp16_small_and_self_describing():
    assert SHIPPED_CHECKPOINT.stat().st_size < 30e6  # the limit
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "checkpoints/*.safetensors" in setup  # installed with the package
    metadata = read_metadata(SHIPPED_CHECKPOINT)
    assert metadata["language_encoder_id"] == encoder_id("small")  # NanoVLA-S, on the packaged MiniLM
    # 320 px, and each token also reads the stride-16 cells under it (fine features, run 29: README, point 24)
    assert metadata["image_encoder_id"] == "efficientnet-lite0@320+s16"
    assert json.loads(metadata["config"])["fine_features"]
    extra = json.loads(metadata["extra"])
    assert json.loads(metadata["config"])["task_loss_weight"] > 0 and extra["step"] > 0  # how it was made travels
    # long-short chunking: H = 40, executing the h = 20 it declares, which leaves a slow host's late chunks 20 actions
    # of slack (run 26's better H = 20 model did not ship for that: README, points 19 and 20)
    assert json.loads(metadata["config"])["horizon"] == 40 and declared_execute_steps(extra) == 20
    # with it: run 30 fine-tuned run 29 with the fine cells' projection learning 30x faster (README, point 25: what
    # met the goals); run 29 fine-tuned run 26's second DAgger round (giving it the fine features), which fine-tuned its
    # first (H = 40 from run 23's first 40 action slots); run 23 fine-tuned run 22, 21, 20 and 19 (DAgger rounds),
    # which fine-tuned run 15, then run 13, trained from scratch with the task head and colour queries (a
    # fine-tune's model settings, the head's weight included, are those of the checkpoint it starts from; its
    # "train" record holds the run's own arguments)
    assert extra["train"]["fine_lr_scale"] == 30.0 and extra["init"]["train"]["fine_features"]
    lineage = [extra]
    while lineage[-1].get("init"):
        assert lineage[-1]["train"]["init_from"] and lineage[-1]["init"]["step"] > 0
        lineage.append(lineage[-1]["init"])
    assert len(lineage) >= 4 and not lineage[-1]["train"].get("init_from")
    assert lineage[-1]["train"]["task_loss_weight"] > 0
    from safetensors import safe_open

    with safe_open(str(SHIPPED_CHECKPOINT), framework="pt") as f:
        assert f.get_tensor("action_head.weight").dtype == torch.float16
        assert f.get_tensor("action_mean").dtype == torch.float32  # normalisation statistics stay fp32


ROLLOUT_STEPS = 100  # control steps (3.3 s at 30 Hz): the experts reach a touch's cube in about that


def test_the_shipped_policy_heads_for_the_named_cube():
    """From home, in unseen scenes, "touch the <colour> cube" run closed loop for ROLLOUT_STEPS control steps
    (executing the h the checkpoint declares of each chunk): the point between the jaws must end nearest that
    colour's cube in most cases (chance: a third; colour-blind policies scored that). Runs 23 and 26 are nearest in
    9 / 9 here, run 25's H = 20 model too; until run 25 the test read the first chunk's command 100 instead (run 12's
    checkpoint nearest in 4 / 9, run 15 in 9 / 9, runs 22 and 23 in 8 / 9), which a 20-action chunk does not have."""
    torch.set_num_threads(2)
    model, extra = load_checkpoint(SHIPPED_CHECKPOINT)
    policy = NanoVLAPolicy(model)
    execute_h = min(declared_execute_steps(extra), model.config.horizon)
    texts = [f"touch the {c} cube" for c in CUBE_COLOURS]
    vectors = dict(zip(texts, load_encoder("small").encode(texts), strict=True))
    workcell = Workcell()
    try:
        hits, total = 0, 0
        for seed in (50000, 50001, 50002):
            layout = sample_layout(np.random.default_rng(seed))
            for colour, text in zip(CUBE_COLOURS, texts, strict=True):
                workcell.place(layout.cubes, layout.squares)
                for step in range(ROLLOUT_STEPS):
                    if step % execute_h == 0:
                        views = {c: workcell.render(c) for c in model.config.cameras}
                        chunk = policy.predict_chunk(views, workcell.joint_positions.astype(np.float32),
                                                     vectors[text])
                        assert chunk.shape == (model.config.horizon, 6) and np.isfinite(chunk).all()
                    workcell.step(chunk[step % execute_h])
                xy = workcell.grasp_point()[:2]
                nearest = min(CUBE_COLOURS, key=lambda c: np.linalg.norm(xy - workcell.cube_position(c)[:2]))
                hits, total = hits + (nearest == colour), total + 1
    finally:
        workcell.close()
    assert hits >= 7, f"nearest the named cube in {hits} / {total} cases"
