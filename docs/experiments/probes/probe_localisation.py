#!/usr/bin/env python3
"""How well do the frozen image features say where the cubes are? (the README's "data loop" diagnosis)

Scenes of the workcell (layouts of seeds 0..N-1, the arm at home, so only the scene varies) are rendered by
the camera at 224 px like the camera node, encoded by the frozen EfficientNet-Lite0 at ``--image-size``, and
a small head (1x1 convolution to 16 channels, then a linear layer) regresses the three cubes' x, y from the
feature map, trained on 85 % of the scenes and tested on the rest. A policy cannot place the arm more
precisely than its features locate the cube; a cube is 3 cm, the open jaws 4 cm.

    python docs/experiments/probes/probe_localisation.py --scenes 1500 --image-size 320 [--stride 16]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder
from nanovla_ros.sim.tasks import sample_layout
from nanovla_ros.sim.workcell import CUBE_COLOURS, Workcell


def scenes(n: int, camera: str, image_size: int, stride: int = 32, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(n, C, h', w') features of n home-pose scenes and (n, 3, 2) cube x, y in metres."""
    workcell, encoder = Workcell(), FrozenImageEncoder("efficientnet-lite0", image_size, stride=stride)
    features, cubes, frames = [], [], []
    try:
        for seed in tqdm(range(n), desc=f"{camera} scenes", unit="scene"):
            layout = sample_layout(np.random.default_rng(seed))
            workcell.place(layout.cubes, layout.squares)
            frames.append(workcell.render(camera))
            cubes.append([layout.cubes[c] for c in CUBE_COLOURS])
            if len(frames) == batch or seed == n - 1:
                with torch.no_grad():
                    features.append(encoder(torch.from_numpy(np.stack(frames))).half().numpy())
                frames = []
    finally:
        workcell.close()
    return np.concatenate(features).astype(np.float32), np.asarray(cubes, np.float32)


def probe(features: np.ndarray, cubes: np.ndarray, seed: int = 0, epochs: int = 2000) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cubes))
    n_test = max(1, int(round(0.15 * len(cubes))))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    x = torch.from_numpy(features)
    mean, std = x[train].mean((0, 2, 3), keepdim=True), x[train].std((0, 2, 3), keepdim=True) + 1e-3
    x = (x - mean) / std
    y = torch.from_numpy(cubes.reshape(len(cubes), -1))
    y_mean = y[train].mean(0)
    c, h, w = features.shape[1:]
    head = nn.Sequential(nn.Conv2d(c, 16, 1), nn.GELU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * h * w, y.shape[1]))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        head.train()
        loss = (head(x[train]) - (y[train] - y_mean)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        predicted = (head(x[test]) + y_mean).numpy().reshape(-1, len(CUBE_COLOURS), 2)
    truth = cubes[test]
    error = np.linalg.norm(predicted - truth, axis=-1)  # (n_test, 3) metres
    guess = np.linalg.norm(cubes[train].mean(0) - truth, axis=-1)
    return {"scenes_train": len(train), "scenes_test": len(test), "map": [h, w],
            "median_error_cm": {colour: round(float(np.median(error[:, i])) * 100, 2) for i, colour in enumerate(CUBE_COLOURS)},
            "guessing_the_mean_cm": round(float(np.median(guess)) * 100, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--camera", default="front", choices=["front", "wrist"])
    parser.add_argument("--image-size", type=int, default=224, help="encoder input (224: 7x7 map, 320: 10x10)")
    parser.add_argument("--stride", type=int, default=32, choices=(32, 16),
                        help="feature map: 32 (final, 1280 ch) or 16 (last stride-16 stage, 112 ch)")
    parser.add_argument("--epochs", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    features, cubes = scenes(args.scenes, args.camera, args.image_size, args.stride)
    print(json.dumps({"camera": args.camera, "image_size": args.image_size, "stride": args.stride, **probe(features, cubes, epochs=args.epochs)},
                     indent=1))


if __name__ == "__main__":
    main()
