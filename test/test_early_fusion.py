"""The trainable early-fusion baseline (issue #31): a tiny randomly initialised Gemma-3 text model, CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_dataset import write_episode

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.configuration_early_fusion import EarlyFusionConfig
from nanovla_ros.model.early_fusion import (
    EarlyFusionPolicyModel,
    load_early_fusion,
    save_early_fusion,
    tokenize,
)

TINY_LM = json.dumps(dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=64,
                          max_position_embeddings=256))


class WordTokenizer:
    """A tokenizer of whitespace words into ids 1..63 (0 pads), for the tiny language model."""
    pad_token_id = 0

    def __call__(self, text: str) -> dict:
        return {"input_ids": [2] + [1 + sum(map(ord, w)) % 62 + 1 for w in text.split()]}


def _inputs(batch: int = 3, tokens: int = 6):
    torch.manual_seed(1)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[0, 4:] = False  # the first instruction is shorter: padded
    return (torch.randn(batch, 1, 8, 2, 2), torch.randint(1, 64, (batch, tokens)), mask, torch.randn(batch, 6))


def test_the_chunk_is_read_jointly_by_queries_that_see_each_other_and_the_prefix_is_causal(tmp_path):
    torch.manual_seed(0)
    config = EarlyFusionConfig(horizon=5, cameras=("front",), image_size=64, image_channels=8, lm_config=TINY_LM)
    model = EarlyFusionPolicyModel(config)
    features, tokens, mask, state = _inputs()
    pred, loss = model(features, tokens, mask, state)
    assert pred.shape == (3, 5, 6) and loss is None
    other = tokens.clone()
    other[0, 4:] = 7  # what stands in the padding does not matter
    np.testing.assert_allclose(model(features, other, mask, state)[0].detach(), pred.detach(), atol=1e-6)
    allowed = model.attention_mask(mask, n_prefix=4 + 6 + 1)[:, 0]  # (B, T, T): 4 cells, 6 tokens, a state
    assert not allowed[:, :11, 11:].any()  # no prefix token attends to a query
    assert allowed[1:, 11:, :].all() and not allowed[0, 11:, 8:10].any()  # queries: everything but padding
    assert not allowed[:, 3, 4:11].any()  # the prefix is causal
    with torch.no_grad():
        model.action_queries[-1] += 1.0
    assert (model(features, tokens, mask, state)[0][:, 0] - pred[:, 0]).abs().max() > 1e-3  # query 0 sees query 4

    actions = torch.randn(3, 5, 6)
    _, loss = model(features, tokens, mask, state, actions)
    loss.backward()
    assert all(p.grad is None for p in model.lm.parameters())  # frozen
    assert model.image_proj.weight.grad is not None and model.action_queries.grad is not None
    path = save_early_fusion(model, tmp_path / "ef.safetensors", {"step": 3})
    loaded, extra = load_early_fusion(path, lm=model.lm)
    assert extra == {"step": 3} and loaded.config == config
    np.testing.assert_allclose(loaded(features, tokens, mask, state)[0].detach(),
                               model.eval()(features, tokens, mask, state)[0].detach(), atol=1e-6)
    assert not any(k.startswith("lm.") for k in model.trainable_state())  # the language model comes from its package


def test_a_padded_instruction_reads_as_it_does_alone():
    """Rotary positions skip the padding: a sentence padded in a training batch and the same sentence alone at
    inference give the same chunk, for both readouts."""
    for readout in ("joint", "autoregressive"):
        torch.manual_seed(0)
        config = EarlyFusionConfig(horizon=4, cameras=("front",), image_size=64, image_channels=8, lm_config=TINY_LM,
                                   readout=readout)
        model = EarlyFusionPolicyModel(config).eval()
        features, tokens, mask, state = _inputs()
        with torch.no_grad():
            batch = model(features, tokens, mask, state)[0][0]
            alone = model(features[:1], tokens[:1, :4], mask[:1, :4], state[:1])[0][0]
        np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_the_autoregressive_readout_decodes_what_teacher_forcing_scores():
    """Decoding with the key-value cache, one step per action, gives what one teacher-forced pass computes when
    fed the decoded actions; an action never depends on a later one; it trains and round-trips like the joint one."""
    torch.manual_seed(0)
    config = EarlyFusionConfig(horizon=5, cameras=("front",), image_size=64, image_channels=8, lm_config=TINY_LM,
                               readout="autoregressive")
    model = EarlyFusionPolicyModel(config).eval()
    features, tokens, mask, state = _inputs()
    with torch.no_grad():
        decoded, loss = model(features, tokens, mask, state)
        assert decoded.shape == (3, 5, 6) and loss is None
        forced, _ = model(features, tokens, mask, state, model.denormalize_actions(decoded))
        np.testing.assert_allclose(forced, decoded, atol=1e-4)
        changed = model.denormalize_actions(decoded).clone()
        changed[:, 3:] += 1.0  # later actions fed differently: the outputs up to action 3 do not move
        moved, _ = model(features, tokens, mask, state, changed)
        np.testing.assert_allclose(moved[:, :4], forced[:, :4], atol=1e-5)
        assert (moved[:, 4] - forced[:, 4]).abs().max() > 1e-4
        # the static cache (one allocation at the final length, what a CUDA graph replays) decodes the same chunk,
        # padding included (the first instruction is padded)
        prefix = model._prefix(features, tokens, state)
        np.testing.assert_allclose(model.decode(prefix, mask, static=True), decoded, atol=1e-5)
    model.train()
    _, loss = model(features, tokens, mask, state, torch.randn(3, 5, 6))
    loss.backward()
    assert model.action_in.weight.grad is not None and all(p.grad is None for p in model.lm.parameters())


def test_instructions_are_tokenized_padded_and_a_too_long_one_is_refused():
    ids, mask = tokenize(["touch the red cube", "touch it"], WordTokenizer(), 8)
    assert ids.shape == mask.shape == (2, 5) and mask.sum(1).tolist() == [5, 3] and (ids[1, 3:] == 0).all()
    with pytest.raises(ConfigError, match="more than 4 tokens"):
        tokenize(["put the red cube in the yellow square"], WordTokenizer(), 4)


def test_early_fusion_trains_on_the_cached_features_and_keeps_its_best_checkpoint(tmp_path):
    from nanovla_ros.data.demos import build_dataset
    from nanovla_ros.training.config import EarlyFusionTrainConfig
    from nanovla_ros.training.early_fusion import train_early_fusion
    from nanovla_ros.training.pipeline import prepare_cache

    texts = ["touch the red cube", "touch the blue cube"]
    for i in range(6):
        write_episode(tmp_path / "bags" / f"ep{i}", instruction=texts[i % 2], seconds=2.0)
    build_dataset(tmp_path / "bags", tmp_path / "ds", progress=False)
    prepare_cache(tmp_path / "ds", image_size=64, with_instructions=False)
    config = EarlyFusionConfig(horizon=8, cameras=("front",), image_size=64, lm_config=TINY_LM)
    best = train_early_fusion(tmp_path / "ds", tmp_path / "run", config,
                              EarlyFusionTrainConfig(steps=60, batch_size=16, lr=3e-3, val_every=20, val_fraction=0.34,
                                                     warmup_steps=5), WordTokenizer(), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 20, 40, 60] and all("val_l1" in h for h in history)
    model, extra = load_early_fusion(best)
    assert extra["val_l1"] == min(h["val_l1"] for h in history[1:]) < 0.8 * history[0]["val_l1"]  # it learns
    assert extra["samples"] > 0 and extra["step"] in (20, 40, 60)
    assert (tmp_path / "run" / "last.safetensors").is_file()

    # both readouts in lockstep on the same batches, each with its own checkpoints; the joint one as it trains alone
    from nanovla_ros.training.early_fusion import train_early_fusion_readouts

    outs = {"joint": tmp_path / "both" / "joint", "autoregressive": tmp_path / "both" / "ar"}
    bests = train_early_fusion_readouts(tmp_path / "ds", outs, config,
                                        EarlyFusionTrainConfig(steps=60, batch_size=16, lr=3e-3, val_every=20,
                                                               val_fraction=0.34, warmup_steps=5),
                                        WordTokenizer(), progress=False)
    joint = json.loads((outs["joint"] / "history.json").read_text())
    np.testing.assert_allclose([h["val_l1"] for h in joint], [h["val_l1"] for h in history], rtol=1e-4)
    ar_model, ar_extra = load_early_fusion(bests["autoregressive"])
    ar_history = json.loads((outs["autoregressive"] / "history.json").read_text())
    assert ar_model.config.readout == "autoregressive" and ar_extra["train_seconds"] > 0
    assert ar_extra["val_l1"] == min(h["val_l1"] for h in ar_history[1:]) < 0.8 * ar_history[0]["val_l1"]


def test_an_early_fusion_checkpoint_runs_in_the_closed_loop_harness_reading_the_instructions_words(tmp_path):
    """`nanovla evaluate` takes an early-fusion checkpoint as it takes NanoVLA's: the policy is picked by the
    checkpoint's format, reads the task's words (no table of vectors) and drives the simulated arm."""
    from nanovla_ros.evaluation.closed_loop import evaluate
    from nanovla_ros.model.checkpoint import checkpoint_execute_steps
    from nanovla_ros.model.early_fusion import EarlyFusionPolicy
    from nanovla_ros.model.onnx_policy import load_policy

    torch.manual_seed(0)
    config = EarlyFusionConfig(horizon=10, cameras=("front", "wrist"), image_size=64, lm_config=TINY_LM)
    path = save_early_fusion(EarlyFusionPolicyModel(config), tmp_path / "ef.safetensors", {"execute_steps": 5})
    assert checkpoint_execute_steps(path) == 5
    policy, extra = load_policy(path)
    assert isinstance(policy, EarlyFusionPolicy) and extra["execute_steps"] == 5
    frames = {name: np.zeros((48, 64, 3), np.uint8) for name in config.cameras}
    chunk = policy.predict_chunk(frames, np.zeros(6, np.float32), "touch the red cube")
    assert chunk.shape == (10, 6) and np.isfinite(chunk).all()
    with pytest.raises(ValueError, match="text"):
        policy.predict_chunk(frames, np.zeros(6, np.float32), np.ones(384, np.float32))
    with pytest.raises(ConfigError, match="torch backend"):
        load_policy(path, backend="onnxruntime")
    results = evaluate(str(path), ["touch"], ["train"], 1, execute_steps=5, max_steps=12, progress=False)
    assert len(results) == 1 and results[0].steps == 12 and results[0].instruction


def test_the_policy_runner_serves_an_early_fusion_checkpoint_from_the_tasks_words(tmp_path):
    """`checkpoint_small:=ef.safetensors`: the policy node's runner picks the architecture from the checkpoint,
    hands it the instruction's text (the cached vector's encoder does not matter to it) and refuses a task without
    text, publishing nothing."""
    from nanovla_ros.driver.config import SO101_MOTORS
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import Observation, PolicyRunner, Skip, Task

    torch.manual_seed(0)
    config = EarlyFusionConfig(horizon=10, cameras=("front",), image_size=64, lm_config=TINY_LM)
    path = save_early_fusion(EarlyFusionPolicyModel(config), tmp_path / "ef.safetensors", {"execute_steps": 5})
    runner = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(path)))
    assert runner.execute_steps == 5
    now_ns = 1_000_000_000_000
    observation = Observation(np.zeros((48, 64, 3), np.uint8), now_ns, np.zeros(6), now_ns, tuple(SO101_MOTORS))
    task = Task(7, "small", "any-encoder", np.ones(384, np.float32), "touch the red cube")
    result = runner.step(observation, task, now_ns / 1e9)
    assert result.positions.shape == (10, 6) and np.isfinite(result.positions).all()
    skip = runner.step(observation, Task(8, "small", "any-encoder", np.ones(384, np.float32)), now_ns / 1e9)
    assert isinstance(skip, Skip) and "words" in skip.reason


def test_a_cut_down_language_model_tokenizes_from_its_table_and_its_checkpoints_deploy_with_the_packaged_one(
        tmp_path):
    """scripts/device/pack_gemma.py's copy (the workcell's sentences' tokens only) has no tokenizer: its table gives
    the ids of the sentences it was made for and refuses others; a checkpoint trained with it records no lm_dir."""
    from nanovla_ros.model.early_fusion import TRIMMED_MARKER, TableTokenizer, load_tokenizer

    folder = tmp_path / "gemma"
    folder.mkdir()
    (folder / "tokens.json").write_text(json.dumps({"touch the red cube": [2, 5, 6, 7, 8]}))
    (folder / "config.json").write_text(json.dumps({"pad_token_id": 0}))
    (folder / TRIMMED_MARKER).write_text("{}")
    tokenizer = load_tokenizer(EarlyFusionConfig(lm_dir=str(folder)))
    assert isinstance(tokenizer, TableTokenizer) and tokenizer("touch the red cube")["input_ids"] == [2, 5, 6, 7, 8]
    with pytest.raises(ConfigError, match="not one of the sentences"):
        tokenizer("make me a coffee")
    config = EarlyFusionConfig(horizon=4, cameras=("front",), image_size=64, lm_config=TINY_LM, lm_dir=str(folder))
    path = save_early_fusion(EarlyFusionPolicyModel(config), tmp_path / "ef.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["lm_dir"] == ""
