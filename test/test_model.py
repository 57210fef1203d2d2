"""NanoVLA: shapes, positional embeddings, determinism, learning, checkpoints, the feature cache."""
import math

import numpy as np
import pytest
import torch

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig, nanovla_l, nanovla_s
from nanovla_ros.model.feature_cache import (
    CachedChunkDataset,
    EpisodeData,
    FeatureCacheError,
    build_feature_cache,
    normalization_stats,
    train_step,
)
from nanovla_ros.model.modeling_nanovla import (
    FrozenImageEncoder,
    NanoVLA,
    NanoVLAPolicy,
    parameter_counts,
    sinusoidal_2d,
)

TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=8,
            latent_dim=4, image_size=64, dropout=0.0, kl_weight=1.0)


@pytest.fixture(scope="module")
def image_encoder():
    return FrozenImageEncoder("efficientnet-lite0", 64)


def test_2d_positional_embedding_matches_a_hand_computation():
    h, w, d = 3, 4, 8
    pe = sinusoidal_2d(h, w, d)
    assert pe.shape == (12, 8)
    i, j = 1, 2  # row 1, column 2 -> flattened index 6
    half = d // 2
    for k in range(half):
        omega = 10000 ** (2 * (k // 2) / half)
        y, x = (i + 1) / h * 2 * math.pi, (j + 1) / w * 2 * math.pi
        trig = math.sin if k % 2 == 0 else math.cos
        assert pe[i * w + j, k].item() == pytest.approx(trig(y / omega), abs=1e-6)
        assert pe[i * w + j, half + k].item() == pytest.approx(trig(x / omega), abs=1e-6)


def test_shapes_and_z_zero_is_deterministic(image_encoder):
    config = NanoVLAConfig(language_dim=16, **TINY)
    model = NanoVLA(config)
    B = 3
    out, loss = model(torch.randn(B, 1280, 2, 2), torch.randn(B, 16), torch.randn(B, 6))
    assert out.shape == (B, 8, 6) and loss is None
    policy = NanoVLAPolicy(model, image_encoder)
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    a = policy.predict_chunk(image, np.zeros(6, np.float32), np.ones(16, np.float32))
    b = policy.predict_chunk(image, np.zeros(6, np.float32), np.ones(16, np.float32))
    assert a.shape == (8, 6)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"\(16,\)"):
        policy.predict_chunk(image, np.zeros(6, np.float32), np.ones(384, np.float32))
    # the per-step path (what compile:=true compiles) sees image_size frames whatever the camera's size, so a
    # camera of another size than the warm-up's blank frame does not compile it again
    seen = []
    step = policy._forward
    policy._forward = lambda pixels, *rest: (seen.append(tuple(pixels.shape)), step(pixels, *rest))[1]
    for h, w in ((48, 80), (64, 64), (120, 160)):
        policy.predict_chunk(np.zeros((h, w, 3), np.uint8), np.zeros(6, np.float32), np.ones(16, np.float32))
    assert seen == [(1, 3, 64, 64)] * 3


def test_padding_mask_excludes_steps_from_the_loss():
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).eval()
    args = (torch.randn(2, 1280, 2, 2), torch.randn(2, 16), torch.randn(2, 6))
    actions = torch.randn(2, 8, 6)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 4:] = False
    _, base = model(*args, actions, mask)
    changed = actions.clone()
    changed[:, 4:] += 100.0  # garbage in the padded steps
    _, same = model(*args, changed, mask)
    assert same["recon"].item() == pytest.approx(base["recon"].item(), rel=1e-4)


def test_real_variants_and_parameter_counts():
    small, large = NanoVLA(nanovla_s()), NanoVLA(nanovla_l())
    assert small.config.language_dim == 768 and large.config.language_dim == 640
    total_s, trainable_s = parameter_counts(small)
    total_l, _ = parameter_counts(large)
    assert total_s == trainable_s and total_l - total_s == (640 - 768) * 256  # only the language projection differs
    with pytest.raises(ConfigError, match="n_heads"):
        NanoVLAConfig(d_model=250, n_heads=8)


def _synthetic_data(seed: int = 0) -> EpisodeData:
    """Two instructions x three colours; the target joints depend on both (a task that needs fusion)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220]], np.uint8)
    images, states, actions, episode, instructions = [], [], [], [], []
    for e in range(6):
        colour, instruction = e % 3, e // 3
        instructions.append(["touch the cube", "push the cube"][instruction])
        goal = np.full(6, 0.3 * colour - 0.4 * instruction)
        for t in range(10):
            image = np.broadcast_to(colours[colour], (64, 64, 3)).copy()
            images.append(image)
            states.append(rng.normal(0, 0.01, 6))
            actions.append(goal * (t + 1) / 10)
            episode.append(e)
    return EpisodeData(np.stack(images), np.array(states), np.array(actions), np.array(episode), instructions)


def _encode_text(texts):
    table = {"touch the cube": np.eye(16)[0], "push the cube": np.eye(16)[1]}
    return np.stack([table[t] for t in texts]).astype(np.float32)


def test_loss_falls_and_a_tiny_model_overfits_cached_features(tmp_path, image_encoder):
    torch.manual_seed(0)
    data = _synthetic_data()
    cache = build_feature_cache(data, tmp_path / "cache", image_encoder, _encode_text, "test-onehot", progress=False)
    dataset = CachedChunkDataset(data, cache, horizon=8, language_encoder_id="test-onehot")
    sample = dataset[9]  # last frame of episode 0: one valid step, seven padded
    assert sample["action_mask"].tolist() == [True] + [False] * 7
    config = NanoVLAConfig(language_dim=16, **TINY)
    model = NanoVLA(config)
    model.set_normalization(*normalization_stats(data))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=20, shuffle=True)
    losses = []
    for _ in range(150):
        for batch in loader:
            losses.append(train_step(model, optimizer, batch)["recon"])
    assert np.mean(losses[-6:]) < 0.25 * np.mean(losses[:3]), (losses[:3], losses[-6:])
    # Overfit: the policy separates colour and instruction (errors well under the 0.3 rad between goals).
    policy = NanoVLAPolicy(model, image_encoder)
    for frame in (0, 20, 40):  # first frames of three (colour, instruction) episodes
        predicted = policy.predict_chunk(data.images[frame], data.states[frame].astype(np.float32),
                                         _encode_text([data.instructions[data.episode[frame]]])[0])
        expected = data.actions[frame:frame + 8]
        assert np.abs(predicted - expected).max() < 0.1, (frame, predicted[:, 0], expected[:, 0])


def test_feature_cache_is_reused_and_refuses_another_encoder(tmp_path, image_encoder):
    data = _synthetic_data()
    cache = build_feature_cache(data, tmp_path / "c", image_encoder, _encode_text, "enc-a", progress=False)
    stamp = (cache / "image_features.npy").stat().st_mtime_ns
    build_feature_cache(data, cache, image_encoder, _encode_text, "enc-a", progress=False)
    assert (cache / "image_features.npy").stat().st_mtime_ns == stamp  # computed once
    with pytest.raises(FeatureCacheError, match="enc-a"):
        CachedChunkDataset(data, cache, horizon=8, language_encoder_id="enc-b")


def test_checkpoint_round_trip_and_encoder_mismatch(tmp_path, image_encoder):
    torch.manual_seed(1)
    model = NanoVLA(NanoVLAConfig(language_dim=16, language_encoder_id="enc-a", **TINY)).eval()
    model.set_normalization(np.ones(6), np.full(6, 2.0), np.zeros(6), np.full(6, 0.5))
    path = save_checkpoint(model, tmp_path / "policy.safetensors", extra={"steps": 3})
    loaded, extra = load_checkpoint(path, "cpu", expected_language_encoder_id="enc-a")
    assert extra == {"steps": 3} and loaded.config == model.config
    image = np.full((64, 64, 3), 120, np.uint8)
    args = (image, np.full(6, 0.1, np.float32), np.ones(16, np.float32))
    np.testing.assert_array_equal(NanoVLAPolicy(model, image_encoder).predict_chunk(*args),
                                  NanoVLAPolicy(loaded, image_encoder).predict_chunk(*args))
    half = save_checkpoint(model, tmp_path / "half.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    with pytest.raises(CheckpointError, match="enc-a.*enc-b"):
        load_checkpoint(path, "cpu", expected_language_encoder_id="enc-b")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_two_cameras_each_reach_the_output_and_frames_are_named(image_encoder):
    torch.manual_seed(0)
    config = NanoVLAConfig(language_dim=16, cameras=("front", "wrist"), **TINY)
    model = NanoVLA(config).eval()
    assert model.camera_embed is not None and "camera_embed.weight" in model.state_dict()
    assert "camera_embed.weight" not in NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).state_dict()  # one camera: none
    front, wrist = torch.randn(2, 1280, 2, 2), torch.randn(2, 1280, 2, 2)
    text, state = torch.randn(2, 16), torch.randn(2, 6)
    both, _ = model(torch.stack([front, wrist], 1), text, state)
    other_wrist, _ = model(torch.stack([front, torch.randn(2, 1280, 2, 2)], 1), text, state)
    swapped, _ = model(torch.stack([wrist, front], 1), text, state)
    assert not torch.allclose(both, other_wrist) and not torch.allclose(both, swapped)  # the camera embedding tells them apart
    with pytest.raises(ValueError, match="1 camera"):
        model(front, text, state)
    policy = NanoVLAPolicy(model, image_encoder)
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for c in ("front", "wrist")}
    chunk = policy.predict_chunk(frames, np.zeros(6, np.float32), np.ones(16, np.float32))
    assert chunk.shape == (8, 6)
    with pytest.raises(ValueError, match=r"\['wrist'\]"):
        policy.predict_chunk({"front": frames["front"]}, np.zeros(6, np.float32), np.ones(16, np.float32))
    with pytest.raises(ValueError, match="camera"):
        policy.predict_chunk(frames["front"], np.zeros(6, np.float32), np.ones(16, np.float32))
    # Checkpoints store the cameras as a JSON list; the config reads them back as a tuple.
    assert NanoVLAConfig.from_dict({**config.to_dict(), "cameras": ["front", "wrist"]}) == config
    with pytest.raises(ConfigError, match="cameras"):
        NanoVLAConfig(cameras=("front", "front"))


def test_the_stride16_map_is_twice_as_fine_and_the_policy_reads_it():
    """image_stride=16 taps EfficientNet's last stride-16 stage (112 channels) and ids it apart from the final map."""
    fine, coarse = FrozenImageEncoder("efficientnet-lite0", 64, stride=16), FrozenImageEncoder("efficientnet-lite0", 64)
    image = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    assert tuple(fine(torch.from_numpy(image)).shape) == (1, 112, 4, 4)
    assert tuple(coarse(torch.from_numpy(image)).shape) == (1, 1280, 2, 2)
    assert (fine.encoder_id, coarse.encoder_id) == ("efficientnet-lite0@64/s16", "efficientnet-lite0@64")
    config = NanoVLAConfig(language_dim=16, image_stride=16, **TINY)
    assert config.image_feature_dim == 112 and config.image_encoder_id == "efficientnet-lite0@64/s16"
    model = NanoVLA(config)
    assert model.image_pos.shape[0] == 16  # a 4x4 grid of image tokens
    chunk = NanoVLAPolicy(model, fine).predict_chunk(image[0], np.zeros(6, np.float32), np.ones(16, np.float32))
    assert chunk.shape == (8, 6) and np.isfinite(chunk).all()
    with pytest.raises(ValueError, match="s16"):
        NanoVLAPolicy(model, coarse)  # a stride-16 model refuses the final map's encoder
    with pytest.raises(ConfigError, match="image_stride"):
        NanoVLAConfig(image_stride=8)


def test_fine_features_fold_the_stride16_map_into_the_final_one_and_start_at_zero(image_encoder):
    """fine_features: one encoder pass gives the final map and, in 4 x 112 more channels, the 2x2 cells of the
    stride-16 map under each token; a model given them by with_fine_features computes what it did before."""

    both = FrozenImageEncoder("efficientnet-lite0", 64, fine=True)
    stride16 = FrozenImageEncoder("efficientnet-lite0", 64, stride=16)
    image = torch.from_numpy(np.random.default_rng(2).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    folded = both(image)
    assert tuple(folded.shape) == (2, 1280 + 448, 2, 2) and both.encoder_id == "efficientnet-lite0@64+s16"
    torch.testing.assert_close(folded[:, :1280], image_encoder(image))
    torch.testing.assert_close(folded[:, 1280:], torch.nn.functional.pixel_unshuffle(stride16(image), 2))
    config = NanoVLAConfig(language_dim=16, **TINY)
    assert NanoVLAConfig(language_dim=16, fine_features=True, **TINY).image_feature_dim == 1728
    torch.manual_seed(0)
    coarse = NanoVLA(config).eval()
    fine = coarse.with_fine_features()
    assert fine.config.fine_features and fine.config.image_encoder_id == "efficientnet-lite0@64+s16"
    state, instruction, z = torch.randn(2, 6), torch.randn(2, 16), torch.zeros(2, 4)
    with torch.no_grad():
        before, _ = coarse(folded[:, :1280], instruction, state)
        after, _ = fine(folded, instruction, state)
        torch.testing.assert_close(after, before)  # the fine cells' weights are zero
        memory, _ = coarse.encode(folded[:, :1280], instruction, state, z)
        torch.testing.assert_close(fine.encode(folded, instruction, state, z)[0], memory)
        assert not fine.fine_proj.weight.any() and torch.equal(fine.image_proj.weight, coarse.image_proj.weight)
        fine.fine_proj.weight += 0.01 * torch.randn_like(fine.fine_proj.weight)
        changed, _ = fine.encode(folded, instruction, state, z)
    assert (changed - memory).abs().max() > 0.01  # ... and the fine map reaches the tokens once they are not
    chunk = NanoVLAPolicy(fine).predict_chunk(image[0].numpy(), np.zeros(6, np.float32), np.ones(16, np.float32))
    assert chunk.shape == (8, 6) and np.isfinite(chunk).all()  # the policy builds the folding encoder itself
    with pytest.raises(ValueError, match="s16"):
        NanoVLAPolicy(fine, image_encoder)  # a fine model refuses the final map alone
    with pytest.raises(ConfigError, match="fine_features"):
        NanoVLAConfig(fine_features=True, image_stride=16)


def test_instructions_are_centred_and_scaled_and_checkpoints_without_that_still_load(tmp_path, image_encoder):
    """Sentence vectors of similar instructions share most of their direction; the model reads them centred on
    the training instructions' mean with unit variance, so a colour word is not a small perturbation."""
    from safetensors.torch import load_file, save_file

    from nanovla_ros.model.modeling_nanovla import language_statistics

    rng = np.random.default_rng(0)
    common = rng.normal(size=16)
    vectors = common + 0.05 * rng.normal(size=(12, 16))  # cosine ~0.99 between any two
    mean, std = language_statistics(vectors)
    normalised = (vectors - mean) / std
    assert np.allclose(normalised.mean(0), 0, atol=1e-5) and np.sqrt((normalised ** 2).mean()) == pytest.approx(1, rel=1e-4)
    assert np.ptp(std) == 0  # one scale for every dimension
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).eval()
    model.set_normalization(np.zeros(6), np.ones(6), np.zeros(6), np.ones(6), mean, std)
    policy = NanoVLAPolicy(model, image_encoder)
    image, state = np.full((64, 64, 3), 90, np.uint8), np.zeros(6, np.float32)
    chunks = [policy.predict_chunk(image, state, v.astype(np.float32)) for v in vectors[:2]]
    assert np.abs(chunks[0] - chunks[1]).max() > 1e-3  # the instruction reaches the output
    path = save_checkpoint(model, tmp_path / "new.safetensors")
    loaded, _ = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.language_std.numpy(), std)
    np.testing.assert_array_equal(NanoVLAPolicy(loaded, image_encoder).predict_chunk(image, state, vectors[0].astype(np.float32)),
                                  chunks[0])
    # A checkpoint written before instruction statistics existed loads with the identity it was trained with.
    state_dict = load_file(str(path))
    metadata = __import__("safetensors").safe_open(str(path), framework="pt").metadata()
    save_file({k: v for k, v in state_dict.items() if k not in ("language_mean", "language_std")}, str(tmp_path / "old.safetensors"),
              metadata=metadata)
    old, _ = load_checkpoint(tmp_path / "old.safetensors")
    assert old.language_mean.abs().sum() == 0 and torch.all(old.language_std == 1)


def test_film_starts_as_the_identity_and_lets_the_instruction_scale_image_channels(image_encoder):
    """language_film: a per-channel scale and shift of the image tokens from the instruction, zero-initialised."""
    torch.manual_seed(0)
    plain = NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).eval()
    torch.manual_seed(0)
    film = NanoVLA(NanoVLAConfig(language_dim=16, language_film=True, **TINY)).eval()
    film.load_state_dict(plain.state_dict(), strict=False)  # every weight but FiLM's (zeros) shared
    args = (torch.randn(2, 1280, 2, 2), torch.randn(2, 16), torch.randn(2, 6))
    torch.testing.assert_close(film(*args)[0], plain(*args)[0])  # the identity until trained
    with torch.no_grad():
        film.film.weight.normal_()
    assert not torch.allclose(film(*args)[0], plain(*args)[0])
    assert set(film.state_dict()) - set(plain.state_dict()) == {"film.weight", "film.bias"}
    two = NanoVLA(NanoVLAConfig(language_dim=16, language_film=True, cameras=("front", "wrist"), **TINY)).eval()
    out, _ = two(torch.randn(2, 2, 1280, 2, 2), torch.randn(2, 16), torch.randn(2, 6))  # one scale per sample, both cameras
    assert out.shape == (2, 8, 6)


def test_state_dropout_hides_the_state_in_training_only():
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=16, state_dropout=1.0, **{**TINY, "dropout": 0.0}))
    image, text = torch.randn(1, 1280, 2, 2), torch.randn(1, 16)
    states = torch.randn(2, 6)
    model.train()
    with torch.no_grad():
        a, b = (model(image, text, s[None])[0] for s in states)  # z = 0 without targets
    torch.testing.assert_close(a, b)  # every state token dropped
    model.eval()
    with torch.no_grad():
        a, b = (model(image, text, s[None])[0] for s in states)
    assert not torch.allclose(a, b)  # inference reads the state
    with pytest.raises(ConfigError, match="state_dropout"):
        NanoVLAConfig(state_dropout=1.5)


def test_the_task_head_learns_where_the_named_cube_is_and_skips_unknown_rows():
    """task_loss_weight > 0: a head on the encoded instruction token predicts the named cube's and goal's x, y.
    Here the answer depends on the instruction alone (two instructions, two places), which the head must learn;
    rows without positions (NaN: bags of a real arm) add nothing."""
    torch.manual_seed(0)
    config = NanoVLAConfig(language_dim=16, task_loss_weight=1.0, **TINY)
    model = NanoVLA(config)
    assert {"task_mean", "task_std"} <= set(model.state_dict())
    assert "task_mean" not in NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).state_dict()  # older checkpoints load
    places = torch.tensor([[0.2, 0.1, 0.25, -0.1], [0.15, -0.1, 0.2, 0.05]])  # metres
    model.set_normalization(np.zeros(6), np.ones(6), np.zeros(6), np.ones(6), task_mean=places.mean(0).numpy(),
                            task_std=places.std(0).numpy())
    words = torch.randn(2, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    which = torch.arange(32) % 2

    def step(task_xy_m: torch.Tensor) -> dict:
        _, loss = model(torch.randn(32, 1280, 2, 2), words[which], torch.randn(32, 6), torch.randn(32, 8, 6),
                        task_xy_m=task_xy_m)
        optimizer.zero_grad()
        loss["loss"].backward()
        optimizer.step()
        return loss

    first = float(step(places[which])["task"])
    for _ in range(150):
        last = float(step(places[which])["task"])
    assert last < 0.2 * first
    model.eval()
    answer = model.predict_task_xy(torch.randn(2, 1280, 2, 2), words, torch.zeros(2, 6))
    assert (answer - places).abs().max() < 0.03  # metres
    unknown = places[which].clone()
    unknown[::2] = float("nan")
    model.train()
    assert torch.isfinite(step(unknown)["loss"])  # the NaN rows are masked, not propagated
    assert float(step(torch.full((32, 4), float("nan")))["task"]) == 0.0
    # Colour queries: another instruction and where its cube is; the head answers from the same scene.
    _, loss = model(torch.randn(4, 1280, 2, 2), words[[0, 0, 1, 1]], torch.randn(4, 6), torch.randn(4, 8, 6),
                    task_xy_m=places[[0, 0, 1, 1]], query_instruction=words[[1, 1, 0, 0]],
                    query_xy_m=places[[1, 1, 0, 0], :2])
    assert float(loss["query"]) < 0.5 and float(loss["task"]) < 0.5  # the head knows both places by now
    _, wrong = model(torch.randn(4, 1280, 2, 2), words[[0, 0, 1, 1]], torch.randn(4, 6), torch.randn(4, 8, 6),
                     query_instruction=words[[1, 1, 0, 0]], query_xy_m=places[[0, 0, 1, 1], :2])
    assert float(wrong["query"]) > 3 * float(loss["query"])  # answering for the episode's own cube is wrong
    # Goal queries: (B, 4), the goal half unknown (NaN) for some: each value counts where it is known.
    model.eval()
    memory, _ = model.encode(torch.randn(4, 1280, 2, 2), words[[0, 0, 1, 1]], torch.zeros(4, 6),
                             torch.zeros(4, model.config.latent_dim))
    half = places[[1, 1, 0, 0]].clone()
    half[:, 2:] = float("nan")
    torch.testing.assert_close(model.task_error(memory, half), model.task_error(memory, places[[1, 1, 0, 0], :2]))
    right, other = model.task_error(memory, places[[0, 0, 1, 1]]), model.task_error(memory, places[[1, 1, 0, 0]])
    assert float(other) > 3 * float(right)  # the goal half counts: the other instruction's places are far off
    model.train()
    with pytest.raises(ValueError, match="no task head"):
        NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).predict_task_xy(torch.randn(1, 1280, 2, 2), words[:1],
                                                                         torch.zeros(1, 6))
    with pytest.raises(ConfigError, match="task_loss_weight"):
        NanoVLAConfig(task_loss_weight=-1.0)


def test_the_task_token_starts_as_the_identity_steers_the_actions_and_leaves_the_head_to_its_own_loss(tmp_path):
    """task_token: the task head's answer starts every action slot. A model given it by with_task_token computes
    what it did; once its projection has weight, moving the head's answer moves the actions; the action loss does
    not train the head (its answer is detached); it survives a checkpoint and an ONNX export."""
    torch.manual_seed(0)
    plain = NanoVLA(NanoVLAConfig(language_dim=16, task_loss_weight=1.0, **TINY)).eval()
    with pytest.raises(ConfigError, match="task head"):
        NanoVLA(NanoVLAConfig(language_dim=16, **TINY)).with_task_token()
    with pytest.raises(ConfigError, match="task_token"):
        NanoVLAConfig(task_token=True)
    token = plain.with_task_token()
    assert token.config.task_token and not token.task_token_proj.weight.any()
    features, instruction, state = torch.randn(2, 1280, 2, 2), torch.randn(2, 16), torch.randn(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(token(features, instruction, state)[0], plain(features, instruction, state)[0])
        token.task_token_proj.weight += torch.randn_like(token.task_token_proj.weight)
        steered, _ = token(features, instruction, state)
        token.task_head[-1].bias += 1.0  # the head says the cube and the goal are elsewhere
        moved, _ = token(features, instruction, state)
    assert (moved - steered).abs().max() > 0.05
    token.train()
    _, loss = token(features, instruction, state, torch.randn(2, 8, 6))  # actions only: no task target
    loss["loss"].backward()
    assert token.task_head[-1].weight.grad is None or not token.task_head[-1].weight.grad.any()
    assert token.task_token_proj.weight.grad.abs().sum() > 0  # ... while the projection learns from the actions
    token.eval()
    path = save_checkpoint(token, tmp_path / "token.safetensors")
    again, _ = load_checkpoint(path)
    assert again.config.task_token
    torch.testing.assert_close(again(features, instruction, state)[0], token(features, instruction, state)[0])
