"""What the probes of the task head share (``probe_read_direction.py``, ``probe_read_stack.py``): their options, the
checkpoint with the phrasing bank's instruction vectors, and the workcell scenes the head is asked about.

The task head (``NanoVLA.predict_task_xy``) reads the x, y of the named cube and of its goal from the fused tokens;
the probes ask it about phrasing-bank sentences in scenes with the arm at home. Not a script of its own."""
from __future__ import annotations

import argparse

import numpy as np
import torch


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--out", default="")
    return parser.parse_args()


class TaskHeadProbe:
    """The checkpoint (fp32, eval), its encoder's vectors of every bank sentence, each sentence's family and core,
    and a workcell to lay scenes out in."""

    def __init__(self, checkpoint: str, table_dir: str) -> None:
        from nanovla_ros import phrasings
        from nanovla_ros.evaluation.closed_loop import instruction_embeddings
        from nanovla_ros.model.checkpoint import load_checkpoint
        from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
        from nanovla_ros.sim.workcell import Workcell

        torch.set_num_threads(2)
        self.model, _ = load_checkpoint(checkpoint)
        self.policy = NanoVLAPolicy(self.model.float().eval())
        self.vectors = instruction_embeddings(self.model.config.language_encoder_id, table_dir, with_bank=True)
        self.family_of = {row[0]: row[4] for split in ("train", "heldout") for row in phrasings.bank(split)}
        core_of = {f.id: f.core for f in phrasings.families()}
        self.core_of_text = lambda text: core_of[self.family_of[text]]
        self.workcell = Workcell()

    def scene(self, seed: int):
        """(rng, layout): the scene of ``seed`` laid out in the workcell; ``rng`` goes on from the layout's draw."""
        from nanovla_ros.sim.tasks import sample_layout

        rng = np.random.default_rng(seed)
        layout = sample_layout(rng)
        self.workcell.place(layout.cubes, layout.squares)
        return rng, layout

    def observe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features (1, N, C, g, g), joint state (1, S)) of the workcell as it is now."""
        frames = [self.workcell.render(name) for name in self.model.config.cameras]
        with torch.no_grad():
            pixels = self.policy.image_encoder.preprocess(torch.from_numpy(np.stack(frames)))
            features = self.policy.image_encoder.features(pixels)[None]
        return features, torch.as_tensor(self.workcell.joint_positions, dtype=torch.float32)[None]

    def read(self, features: torch.Tensor, state: torch.Tensor, texts: list[str]) -> np.ndarray:
        """(len(texts), 4): the task head's named cube x, y and goal x, y for each sentence, on one observation."""
        with torch.no_grad():
            return self.model.predict_task_xy(features.expand(len(texts), *features.shape[1:]),
                                              torch.as_tensor(np.stack([self.vectors[t] for t in texts])),
                                              state.expand(len(texts), -1)).numpy()

    def close(self) -> None:
        self.workcell.close()
