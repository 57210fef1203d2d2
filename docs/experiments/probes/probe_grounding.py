#!/usr/bin/env python3
"""Can NanoVLA's fusion find the cube an instruction asks for? (the README's "data loop" diagnosis)

Trained policies ignored the colour word: from the home pose their first chunk went no nearer the asked cube
than the others. This probe isolates that binding. Workcell scenes (the arm at home) are rendered and encoded by
the frozen EfficientNet-Lite0 as the policy sees them; NanoVLA itself (image tokens, instruction token, the
small transformer; horizon 1, z = 0) is trained to output the x, y of the cube that "touch the <colour> cube"
names, with and without FiLM conditioning of the image tokens on the instruction (``language_film``), on 85 %
of the scenes and tested on the rest: median error to the asked cube and how often the answer is nearest to it
(a third is chance).

    python docs/experiments/probes/probe_grounding.py --scenes 700 --steps 3000
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tqdm import tqdm

from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA, language_statistics
from nanovla_ros.sim.workcell import CUBE_COLOURS


def instruction_vectors(table_dir: str) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """MiniLM vectors of "touch the <colour> cube" per colour, and the statistics over every workcell instruction."""
    from nanovla_ros.evaluation.closed_loop import instruction_embeddings
    from nanovla_ros.language.encoders import encoder_id

    table = instruction_embeddings(encoder_id("small"), table_dir or None)
    return (np.stack([table[f"touch the {c} cube"] for c in CUBE_COLOURS]),
            language_statistics(np.stack(list(table.values()))))


def fit(features: np.ndarray, cubes: np.ndarray, vectors: np.ndarray, stats, film: bool, steps: int,
        seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cubes))
    n_test = max(1, int(round(0.15 * len(cubes))))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    config = NanoVLAConfig(language_dim=vectors.shape[1], horizon=1, action_dim=2, use_state=False, d_model=128,
                           n_heads=4, ffn_dim=256, enc_layers=2, dec_layers=1, vae_layers=1, dropout=0.0,
                           image_size=32 * features.shape[-1], language_film=film)
    model = NanoVLA(config)
    xy = cubes.reshape(-1, 2)
    model.set_normalization(np.zeros(6), np.ones(6), xy.mean(0), xy.std(0), *stats)
    x, y, v = torch.from_numpy(features).float(), torch.from_numpy(cubes), torch.from_numpy(vectors).float()
    state = torch.zeros(1, 6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)

    def predict(scenes: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        out, _ = model(x[scenes], v[colours], state.expand(len(scenes), -1))  # z = 0: no posterior involved
        return model.denormalize_actions(out)[:, 0]  # (B, 2) metres

    for _ in tqdm(range(steps), desc=f"film={film}", unit="step", mininterval=10):
        model.train()
        scenes = torch.from_numpy(rng.choice(train, 64))
        colours = torch.from_numpy(rng.integers(0, len(CUBE_COLOURS), 64))
        target = y[scenes, colours]
        loss = ((predict(scenes, colours) - target) / model.action_std).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    errors, nearest = [], []
    with torch.no_grad():
        for c in range(len(CUBE_COLOURS)):
            scenes = torch.from_numpy(test)
            answer = predict(scenes, torch.full((len(test),), c)).numpy()  # (n_test, 2)
            distances = np.linalg.norm(answer[:, None] - cubes[test], axis=-1)  # (n_test, 3)
            errors.append(distances[:, c])
            nearest.append(distances.argmin(1) == c)
    return {"language_film": film, "scenes_train": len(train), "scenes_test": len(test), "steps": steps,
            "median_error_to_asked_cube_cm": round(float(np.median(np.concatenate(errors))) * 100, 2),
            "nearest_is_asked_cube": round(float(np.mean(np.concatenate(nearest))), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=700)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--table-dir", default="", help="feature cache with instruction tables (else MiniLM runs)")
    parser.add_argument("--features", default="", help="an .npz of features and cubes saved by an earlier run")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()
    if args.features:
        saved = np.load(args.features)
        features, cubes = saved["features"].astype(np.float32), saved["cubes"]
    else:
        from probe_localisation import scenes

        features, cubes = scenes(args.scenes, "front", args.image_size)
    vectors, stats = instruction_vectors(args.table_dir)
    results = [fit(features, cubes, vectors, stats, film, args.steps) for film in (False, True)]
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
