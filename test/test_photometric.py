"""Software auto-exposure and white balance before the policy (nanovla_ros/model/photometric.py)."""
from __future__ import annotations

import numpy as np
import pytest

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.photometric import WORKCELL_REFERENCE_RGB, FrameDenoise, FrameGain, GainNormalisedPolicy
from nanovla_ros.policy.config import PolicyNodeConfig

TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=8, latent_dim=4,
            image_size=64, language_dim=16, language_encoder_id="enc", cameras=("front", "wrist"))


def scene(rng: np.random.Generator) -> np.ndarray:
    """A frame with the workcell's mean colour and some structure (uint8, 48 x 64)."""
    frame = rng.normal(WORKCELL_REFERENCE_RGB, 20.0, (48, 64, 3))
    return np.clip(frame, 0, 255).astype(np.uint8)


def test_rgb_gain_undoes_a_dimmer_warmer_light_and_leaves_the_training_light_alone():
    rng = np.random.default_rng(0)
    frame = scene(rng)
    light = np.array([0.6 * 1.1, 0.6, 0.6 * 0.8])  # 60 % of the light, warmer
    dim = np.clip(frame * light, 0, 255).astype(np.uint8)
    out = FrameGain("rgb")({"front": dim, "wrist": dim}, "front")
    restored = out["front"].reshape(-1, 3).mean(0)
    assert np.allclose(restored, frame.reshape(-1, 3).mean(0), rtol=0.02)
    assert np.abs(out["wrist"].astype(int) - frame.astype(int)).mean() < 2.0  # the same gains on every camera
    assert np.allclose(FrameGain("rgb").gains(frame), 1.0, atol=0.01)  # the training light: (nearly) no change
    luma = FrameGain("luma").gains(dim)
    assert np.allclose(luma, luma[0]) and 1.5 < luma[0] < 1.8  # one gain: brightness, not colour
    assert FrameGain("off")({"front": dim}, "front")["front"] is dim


def test_gains_are_clipped_and_bad_settings_refused():
    black = np.zeros((8, 8, 3), np.uint8)
    assert np.allclose(FrameGain("rgb").gains(black), 3.0)  # a dark frame is not blown up without bound
    with pytest.raises(ValueError, match="mode"):
        FrameGain("auto")
    with pytest.raises(ValueError, match="reference_rgb"):
        FrameGain("rgb", (0.0, 100.0, 100.0))
    with pytest.raises(ConfigError, match="frame_gain"):
        PolicyNodeConfig(frame_gain="on")
    with pytest.raises(ConfigError, match="frame_reference_rgb"):
        PolicyNodeConfig(frame_gain="rgb", frame_reference_rgb=(200.0, 100.0))
    assert PolicyNodeConfig().frame_gain == "off"


def test_a_policy_reading_through_the_gain_acts_in_a_dim_room_as_in_the_training_light():
    """A real (tiny, random) NanoVLA: its chunk from a uniformly dimmed scene differs from the scene's own; read
    through the rgb gain it is the scene's own again (up to uint8 rounding)."""
    import torch

    from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
    from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy

    torch.manual_seed(0)
    policy = NanoVLAPolicy(NanoVLA(NanoVLAConfig(**TINY)))
    rng = np.random.default_rng(1)
    frames = {"front": scene(rng), "wrist": scene(rng)}
    reference = tuple(float(v) for v in frames["front"].reshape(-1, 3).mean(0))
    dim = {k: (v * 0.6).astype(np.uint8) for k, v in frames.items()}
    state, vector = np.zeros(6, np.float32), np.ones(16, np.float32)
    own = policy.predict_chunk(frames, state, vector)
    wrapped = GainNormalisedPolicy(policy, FrameGain("rgb", reference))
    assert wrapped.config is policy.config  # the node and the evaluation read the wrapped policy's config
    plain_error = np.abs(policy.predict_chunk(dim, state, vector) - own).max()
    gained_error = np.abs(wrapped.predict_chunk(dim, state, vector) - own).max()
    assert gained_error < 0.25 * plain_error


@pytest.mark.parametrize("mode", ["gaussian", "median"])
def test_denoising_removes_most_sensor_noise_and_keeps_a_flat_scene_and_its_edges(mode):
    rng = np.random.default_rng(1)
    clean = np.zeros((224, 224, 3), np.uint8)
    clean[:, :112] = (200, 170, 120)  # a table ...
    clean[:, 112:] = (30, 30, 200)  # ... beside a blue cube: one sharp edge
    noisy = np.clip(clean + rng.normal(0.0, 8.0, clean.shape), 0, 255).astype(np.uint8)
    out = FrameDenoise(mode)({"front": noisy, "wrist": noisy})
    assert set(out) == {"front", "wrist"} and out["front"].shape == clean.shape and out["front"].dtype == np.uint8
    error = np.abs(out["front"].astype(int) - clean)
    assert error[:, 8:104].std() < 0.5 * np.abs(noisy.astype(int) - clean)[:, 8:104].std()  # noise cut by half+
    assert error[:, 8:104].mean() < 4 and error[:, 120:216].mean() < 4  # flat areas keep their colour
    assert out["front"][100, 100, 2] < 150 and out["front"][100, 124, 2] > 150  # the edge stays where it was
    assert FrameDenoise("off")({"front": noisy})["front"] is noisy


def test_denoising_refuses_an_unknown_mode_or_strength():
    with pytest.raises(ValueError, match="denoise mode"):
        FrameDenoise("bilateral")
    with pytest.raises(ValueError, match="sigma_px"):
        FrameDenoise("gaussian", 0.0)


def test_the_policy_node_config_takes_denoise_and_refuses_bad_settings():
    assert PolicyNodeConfig().denoise == "off"  # the frames as they come unless asked
    assert PolicyNodeConfig(denoise="median").denoise == "median"
    with pytest.raises(ConfigError, match="denoise"):
        PolicyNodeConfig(denoise="strong")
    with pytest.raises(ConfigError, match="denoise_sigma_px"):
        PolicyNodeConfig(denoise="gaussian", denoise_sigma_px=-1.0)


def test_a_policy_reading_through_denoise_acts_on_a_noisy_scene_nearer_its_clean_one():
    """A real (tiny, random) NanoVLA: its chunk from a noisy scene, read through denoise, is nearer the chunk of
    the same scene blurred without noise than the noisy scene's own chunk is."""
    import torch

    from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
    from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy

    torch.manual_seed(0)
    policy = NanoVLAPolicy(NanoVLA(NanoVLAConfig(**TINY)))
    rng = np.random.default_rng(2)
    clean = {"front": np.full((64, 64, 3), 120, np.uint8), "wrist": np.full((64, 64, 3), 90, np.uint8)}
    clean["front"][20:40, 20:40] = (30, 30, 200)
    noisy = {k: np.clip(v + rng.normal(0, 16, v.shape), 0, 255).astype(np.uint8) for k, v in clean.items()}
    state, vector = np.zeros(6, np.float32), np.ones(16, np.float32)
    denoise = FrameDenoise("gaussian", 1.0)
    target = policy.predict_chunk(denoise(clean), state, vector)
    wrapped = GainNormalisedPolicy(policy, denoise)
    assert np.abs(wrapped.predict_chunk(noisy, state, vector) - target).max() < \
        np.abs(policy.predict_chunk(noisy, state, vector) - target).max()
