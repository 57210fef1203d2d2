"""The checkpoint that ships with the package (what `make demo` runs): properties any shipped checkpoint must
have. It is small and fp16, describes itself (encoders, config, how it was trained, its lineage back to a model
trained from scratch), declares an executed prefix that leaves slack for late chunks, and heads for the cube its
instruction names (a colour-blind policy does not)."""
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
    assert SHIPPED_CHECKPOINT.stat().st_size < 30e6  # small enough to ship in the package
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "checkpoints/*.safetensors" in setup  # installed with the package
    metadata = read_metadata(SHIPPED_CHECKPOINT)
    config, extra = json.loads(metadata["config"]), json.loads(metadata["extra"])
    # It names the frozen encoders it was trained with, and they are the packaged ones.
    assert metadata["language_encoder_id"] in (encoder_id("small"), encoder_id("large"))
    assert metadata["image_encoder_id"].startswith(config["image_encoder"])
    assert extra["step"] > 0 and extra["train"]  # how it was made travels with it
    # Long-short chunking: it declares the h it runs, and that leaves a slow host's late chunks slack.
    assert 1 <= declared_execute_steps(extra) <= config["horizon"] // 2
    # Its lineage goes back, fine-tune by fine-tune, to a model trained from scratch (a fine-tune's model settings
    # are those of the checkpoint it starts from; its "train" record holds the run's own arguments).
    lineage = [extra]
    while lineage[-1].get("init"):
        assert lineage[-1]["train"]["init_from"] and lineage[-1]["init"]["step"] > 0
        lineage.append(lineage[-1]["init"])
    assert not lineage[-1]["train"].get("init_from")
    from safetensors import safe_open

    with safe_open(str(SHIPPED_CHECKPOINT), framework="pt") as f:
        assert f.get_tensor("action_head.weight").dtype == torch.float16
        assert f.get_tensor("action_mean").dtype == torch.float32  # normalisation statistics stay fp32


ROLLOUT_STEPS = 100  # control steps (3.3 s at 30 Hz): the experts reach a touch's cube in about that


def test_the_shipped_policy_heads_for_the_named_cube():
    """From home, in unseen scenes, "touch the <colour> cube" run closed loop for ROLLOUT_STEPS control steps
    (executing the h the checkpoint declares of each chunk): the point between the jaws must end nearest that
    colour's cube in most cases (chance: a third; colour-blind policies score that)."""
    torch.set_num_threads(2)
    model, extra = load_checkpoint(SHIPPED_CHECKPOINT)
    policy = NanoVLAPolicy(model)
    execute_steps = min(declared_execute_steps(extra), model.config.horizon)
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
                    if step % execute_steps == 0:
                        views = {c: workcell.render(c) for c in model.config.cameras}
                        chunk = policy.predict_chunk(views, workcell.joint_positions.astype(np.float32),
                                                     vectors[text])
                        assert chunk.shape == (model.config.horizon, 6) and np.isfinite(chunk).all()
                    workcell.step(chunk[step % execute_steps])
                xy = workcell.grasp_point()[:2]
                nearest = min(CUBE_COLOURS, key=lambda c: np.linalg.norm(xy - workcell.cube_position(c)[:2]))
                hits, total = hits + (nearest == colour), total + 1
    finally:
        workcell.close()
    assert hits >= 7, f"nearest the named cube in {hits} / {total} cases"
