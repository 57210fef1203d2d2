#!/usr/bin/env python3
"""How much the frozen image encoder's features, and the shipped model's projections of them, change under a
perturbation: relative change (norm of the difference / norm of the nominal) of the raw final map (coarse), the
raw stride-16 cells (fine) and their projections, one evaluation scene (seed 1000), per camera. Sensor noise also
read through the policy node's `denoise` filters, and the residual noise after the gaussian one.

    python docs/experiments/probes/probe_feature_sensitivity.py
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

GAUSSIAN, MEDIAN = FrameDenoise("gaussian", 1.0), FrameDenoise("median")
# (condition, filter before the encoder)
CASES = [("noise=4", None), ("light=0.6", None), ("exposure=1.3", None), ("camera_shift_cm=2", None),
         ("blur_px=1", None), ("blur_px=0.5", None), ("wrist_tilt_deg=5", None), ("", GAUSSIAN),
         ("noise=4", GAUSSIAN), ("noise=4", MEDIAN), ("noise=8", GAUSSIAN)]


def relative(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).norm() / old.norm())


def main() -> None:
    torch.set_num_threads(2)
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    model = model.float().eval()
    encoder, c = NanoVLAPolicy(model).image_encoder, model.config
    workcell = Workcell()
    layout = sample_layout(np.random.default_rng(1000))

    def frames(condition: str, denoise: FrameDenoise | None = None) -> dict[str, np.ndarray]:
        """Each camera's frame at the camera's size, as the policy gets it (through ``denoise`` if given)."""
        undo = apply(workcell, parse(condition), np.random.default_rng(5))
        workcell.place(layout.cubes, layout.squares)
        views = {camera: workcell.render(camera) for camera in c.cameras}
        undo()
        return denoise(views) if denoise else views

    def features(views: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """raw coarse, raw fine, projected coarse, projected fine; (cameras, C, h, w) each."""
        with torch.no_grad():
            maps = encoder(torch.from_numpy(np.stack([views[camera] for camera in c.cameras])))
            split = maps.shape[1] - c.fine_feature_dim
            fine = (maps[:, split:] - model.fine_mean[:, None, None]) / model.fine_std[:, None, None]
            return maps[:, :split], maps[:, split:], model.image_proj(maps[:, :split]), model.fine_proj(fine)

    nominal = features(frames(""))
    print("condition            filter         raw coarse  raw fine  proj. coarse  proj. fine  (per camera: "
          + ", ".join(c.cameras) + ")")
    for condition, denoise in CASES:
        changed = features(frames(condition, denoise))
        cells = [f"{relative(n, o):.2f} {[round(relative(n[i], o[i]), 2) for i in range(len(c.cameras))]}"
                 for n, o in zip(changed, nominal, strict=True)]
        how = f"{denoise.mode} {denoise.sigma_px:g}" if denoise else "-"
        print(f"{condition or 'nominal':20s} {how:14s} " + "  ".join(cells))
    clean, noisy = frames(""), frames("noise=4")
    for camera in c.cameras:
        residual = GAUSSIAN(noisy)[camera].astype(float) - GAUSSIAN(clean)[camera]
        print(f"{camera}: noise std {np.std(noisy[camera].astype(float) - clean[camera]):.2f}, after the gaussian "
              f"filter {np.std(residual):.2f}")


if __name__ == "__main__":
    main()
