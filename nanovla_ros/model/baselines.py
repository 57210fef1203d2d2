"""Baselines measured against NanoVLA on the same hardware (latency and memory; training optional).

EarlyFusionVLA is EdgeVLA-style early fusion: the image's tokens (projected into the LM's width), the
instruction's tokens and a state token pass through Gemma-3-270M together at EVERY control step, then
the action chunk is read out either jointly (H action query tokens in the same pass, EdgeVLA's joint
prediction) or autoregressively (one LM step per action, with a KV cache). The readout heads are
randomly initialised: these models are for timing, not for control.

Note: the joint readout runs the LM's causal mask; a non-causal mask among the action queries (as in
EdgeVLA) changes which positions attend where, not the amount of computation being timed.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder


class EarlyFusionVLA(nn.Module):
    def __init__(self, horizon: int = 100, action_dim: int = 6, state_dim: int = 6, readout: str = "joint",
                 image_encoder: FrozenImageEncoder | None = None, lm_dir: str | None = None,
                 random_lm_weights: bool = False) -> None:
        """``random_lm_weights`` builds Gemma-3-270M from ``lm_dir``'s config alone (for timing on a machine
        the packaged weights cannot reach; latency does not depend on weight values)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from nanovla_ros.language.encoders import prepare_gemma

        if readout not in ("joint", "autoregressive"):
            raise ValueError(f"readout={readout!r} must be 'joint' or 'autoregressive'")
        path = lm_dir or str(prepare_gemma())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        lm = (AutoModel.from_config(AutoConfig.from_pretrained(path)) if random_lm_weights
              else AutoModel.from_pretrained(path, dtype=torch.float32))
        self.lm = lm.float().eval().requires_grad_(False)
        width = self.lm.config.hidden_size  # 640
        self.image_encoder = image_encoder or FrozenImageEncoder("efficientnet-lite0", 224)
        self.image_proj = nn.Linear(1280, width)
        self.state_proj = nn.Linear(state_dim, width)
        self.action_queries = nn.Parameter(torch.randn(horizon, width) * 0.02)
        self.action_embed = nn.Linear(action_dim, width)
        self.head = nn.Linear(width, action_dim)
        self.horizon, self.readout = horizon, readout

    @torch.inference_mode()
    def predict_chunk(self, image: np.ndarray, state: np.ndarray, instruction: str) -> np.ndarray:
        device = self.head.weight.device
        features = self.image_encoder(torch.from_numpy(np.ascontiguousarray(image))[None].to(device))  # (1, C, h', w')
        image_tokens = self.image_proj(features.flatten(2).transpose(1, 2))  # (1, h'w', W)
        ids = self.tokenizer(instruction, return_tensors="pt")["input_ids"].to(device)  # (1, T)
        text_tokens = self.lm.embed_tokens(ids)  # (1, T, W), Gemma's scaled embedding
        state_token = self.state_proj(torch.as_tensor(state, dtype=torch.float32, device=device))[None, None]  # (1, 1, W)
        prefix = torch.cat([image_tokens, text_tokens, state_token], dim=1)  # (1, P, W)
        if self.readout == "joint":
            inputs = torch.cat([prefix, self.action_queries[None]], dim=1)  # (1, P + H, W)
            hidden = self.lm(inputs_embeds=inputs).last_hidden_state[:, -self.horizon:]  # (1, H, W)
            return self.head(hidden)[0].float().cpu().numpy()  # (H, A)
        out = self.lm(inputs_embeds=prefix, use_cache=True)
        cache, last = out.past_key_values, out.last_hidden_state[:, -1:]  # (1, 1, W)
        actions = []
        for _ in range(self.horizon):
            action = self.head(last)  # (1, 1, A)
            actions.append(action)
            out = self.lm(inputs_embeds=self.action_embed(action), past_key_values=cache, use_cache=True)
            cache, last = out.past_key_values, out.last_hidden_state
        return torch.cat(actions, dim=1)[0].float().cpu().numpy()  # (H, A)
