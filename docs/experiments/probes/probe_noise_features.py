#!/usr/bin/env python3
"""How far sensor noise moves the shipped model's projected image features, with and without denoising before the
encoder, beside a blur and a dimmer light (relative change: norm of the difference / norm of the nominal; per
camera; one evaluation scene, seed 1000). Also the residual noise after the blur.

    python docs/experiments/probes/probe_noise_features.py
"""
import numpy as np
import torch

from nanovla_ros.graph import SHIPPED_CHECKPOINT
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.model.photometric import FrameDenoise
from nanovla_ros.sim.perturbation import apply, parse
from nanovla_ros.sim.tasks import sample_layout
from nanovla_ros.sim.workcell import Workcell

GAUSSIAN = FrameDenoise("gaussian", 1.0)
CASES = [("", GAUSSIAN), ("blur_px=1", None), ("blur_px=0.5", None), ("noise=4", None), ("noise=4", GAUSSIAN),
         ("noise=4", FrameDenoise("median")), ("noise=8", GAUSSIAN), ("light=0.6", None)]


def main() -> None:
    torch.set_num_threads(2)
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    model = model.float().eval()
    encoder, c = NanoVLAPolicy(model).image_encoder, model.config
    workcell = Workcell()
    layout = sample_layout(np.random.default_rng(1000))

    def frames(condition: str, denoise: FrameDenoise | None = None) -> dict[str, np.ndarray]:
        undo = apply(workcell, parse(condition), np.random.default_rng(5))
        workcell.place(layout.cubes, layout.squares)
        views = {camera: workcell.render(camera) for camera in c.cameras}
        undo()
        return denoise(views) if denoise else views

    def features(views: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """projected coarse, projected fine; (cameras, C, h, w) each."""
        with torch.no_grad():
            maps = encoder(torch.from_numpy(np.stack([views[camera] for camera in c.cameras])))
            split = maps.shape[1] - c.fine_feature_dim
            fine = (maps[:, split:] - model.fine_mean[:, None, None]) / model.fine_std[:, None, None]
            return model.image_proj(maps[:, :split]), model.fine_proj(fine)

    def relative(new: torch.Tensor, old: torch.Tensor) -> list[float]:
        return [round(float((new[i] - old[i]).norm() / old[i].norm()), 3) for i in range(len(c.cameras))]

    nominal = features(frames(""))
    print(f"relative change of the projected features per camera ({', '.join(c.cameras)})")
    for condition, denoise in CASES:
        coarse, fine = features(frames(condition, denoise))
        how = f"{denoise.mode} {denoise.sigma_px:g}" if denoise else "as rendered"
        print(f"{condition or 'nominal':12s} {how:14s} coarse {relative(coarse, nominal[0])} "
              f"fine {relative(fine, nominal[1])}")
    clean, noisy = frames(""), frames("noise=4")
    for camera in c.cameras:
        residual = GAUSSIAN(noisy)[camera].astype(float) - GAUSSIAN(clean)[camera]
        print(f"{camera}: noise std {np.std(noisy[camera].astype(float) - clean[camera]):.2f}, "
              f"after the blur {np.std(residual):.2f}")


if __name__ == "__main__":
    main()
