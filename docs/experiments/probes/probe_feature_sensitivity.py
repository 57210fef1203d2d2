#!/usr/bin/env python3
"""How much the frozen image encoder's features, and the shipped model's projections of them, change under a
perturbation: relative change (norm of the difference / norm of the nominal) of the raw final map (coarse), the
raw stride-16 cells (fine) and their projections, one evaluation scene (seed 1000), per camera.

    python docs/experiments/probes/probe_feature_sensitivity.py
"""
import numpy as np
import torch

from nanovla_ros.graph import SHIPPED_CHECKPOINT
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.sim.perturbation import apply, parse
from nanovla_ros.sim.tasks import sample_layout
from nanovla_ros.sim.workcell import Workcell

CONDITIONS = ("noise=4", "light=0.6", "exposure=1.3", "camera_shift_cm=2", "blur_px=1", "wrist_tilt_deg=5")


def relative(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).norm() / old.norm())


def main() -> None:
    torch.set_num_threads(1)
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    model = model.float().eval()
    encoder, c = NanoVLAPolicy(model).image_encoder, model.config
    workcell = Workcell()
    layout = sample_layout(np.random.default_rng(1000))

    def features(condition: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """raw coarse, raw fine, projected coarse, projected fine; (cameras, C, h, w) each."""
        undo = apply(workcell, parse(condition), np.random.default_rng(5))
        workcell.place(layout.cubes, layout.squares)
        frames = np.stack([workcell.render(camera, 224) for camera in c.cameras])
        undo()
        with torch.no_grad():
            maps = encoder(torch.from_numpy(frames))
            split = maps.shape[1] - c.fine_feature_dim
            fine = (maps[:, split:] - model.fine_mean[:, None, None]) / model.fine_std[:, None, None]
            return maps[:, :split], maps[:, split:], model.image_proj(maps[:, :split]), model.fine_proj(fine)

    nominal = features("")
    print("condition            raw coarse  raw fine  proj. coarse  proj. fine  (per camera: " + ", ".join(c.cameras) + ")")
    for condition in CONDITIONS:
        changed = features(condition)
        cells = [f"{relative(n, o):.2f} {[round(relative(n[i], o[i]), 2) for i in range(len(c.cameras))]}"
                 for n, o in zip(changed, nominal, strict=True)]
        print(f"{condition:20s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
