#!/usr/bin/env python3
"""How much the frozen image encoder's features, and the shipped model's projections of them, change under a
perturbation: relative change (norm of the difference / norm of the nominal) of the raw final map (coarse), the
raw stride-16 cells (fine) and their projections, one evaluation scene (seed 1000), per camera.

    python docs/experiments/probes/probe_feature_sensitivity.py
"""
import numpy as np, torch
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.sim.workcell import Workcell
from nanovla_ros.sim.tasks import sample_layout
from nanovla_ros.sim.perturbation import apply, parse
torch.set_num_threads(1)
model, _ = load_checkpoint("nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
model = model.float().eval(); policy = NanoVLAPolicy(model)
c = model.config
print("fine", c.fine_features, c.fine_feature_dim, "std pct", np.percentile(model.fine_std.numpy(), [0, 5, 50, 95]).round(4))
w = Workcell()
layout = sample_layout(np.random.default_rng(1000))
def frames(cond):
    undo = apply(w, parse(cond), np.random.default_rng(5)); w.place(layout.cubes, layout.squares)
    f = np.stack([w.render(cam, 224) for cam in c.cameras]); undo(); return f
enc = policy.image_encoder
def contributions(f):
    with torch.no_grad():
        maps = enc(torch.from_numpy(f))
        coarse = maps.shape[1] - c.fine_feature_dim
        fine = (maps[:, coarse:] - model.fine_mean[:, None, None]) / model.fine_std[:, None, None]
        return model.image_proj(maps[:, :coarse]), model.fine_proj(fine), maps
base = contributions(frames(""))
for cond in ["noise=4", "light=0.6", "exposure=1.3", "camera_shift_cm=2", "blur_px=1", "wrist_tilt_deg=5"]:
    out = contributions(frames(cond))
    rel = [float((o - b).norm() / b.norm()) for o, b in zip(out[:2], base[:2])]
    per_cam = [[float((out[k][i] - base[k][i]).norm() / base[k][i].norm()) for i in range(len(c.cameras))] for k in range(2)]
    coarse_n = out[2].shape[1] - c.fine_feature_dim
    raw = [float((out[2][:, :coarse_n] - base[2][:, :coarse_n]).norm() / base[2][:, :coarse_n].norm()),
           float((out[2][:, coarse_n:] - base[2][:, coarse_n:]).norm() / base[2][:, coarse_n:].norm())]
    print(f"{cond:20s} raw coarse {raw[0]:.3f} raw fine {raw[1]:.3f} | coarse {rel[0]:.3f} fine {rel[1]:.3f}  per camera coarse {np.round(per_cam[0],3)} fine {np.round(per_cam[1],3)}")
