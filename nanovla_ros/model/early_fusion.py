"""EdgeVLA-style early fusion, trainable: the baseline NanoVLA's decoupling is measured against (issue #31; no ROS).

Every control step the image's feature tokens (the same frozen EfficientNet-Lite0 maps NanoVLA reads, one linear
projection into the language model's width, a learned embedding per cell and camera), the instruction's own
tokens (the language model's embedding table), a joint-state token and H action queries pass through the
language model together; the action queries' outputs are the whole chunk at once (EdgeVLA's joint prediction,
non-autoregressive). Attention: the prefix (image, instruction, state) is causal as the language model was
trained; each action query attends to the whole prefix and to every other query (the causal mask removed for the
readout), and no prefix token attends to a query.

The language model (Gemma-3-270M from its package) is frozen; what trains is the image and state projections,
the cell and camera embeddings, the action queries and the action head (a few million weights): "frozen with a
trained projection", which one GPU session can afford. Image features are cached as for NanoVLA, so training
reads no pixels; the language model still runs forward and backward every step, which is the cost early fusion
pays and NanoVLA does not.

``readout="autoregressive"`` is the other decoding EdgeVLA is compared with: the whole sequence causal, action j's
token is a learned step embedding plus the projection of action j - 1 (a start token for j = 0), and its output is
action j; trained with teacher forcing (one pass, the same cost as the joint readout), decoded one language-model
step per action with a key-value cache. Actions stay continuous (an L1 regression like NanoVLA's), not binned into
vocabulary tokens: what is compared is the decoding, not a tokenisation.

Positions skip the instruction's padding, so that a padded training sample and the same sentence alone at
inference put every token at the same rotary position.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.configuration_early_fusion import EarlyFusionConfig

FORMAT = "nanovla-early-fusion/1"
# in the folder of a cut-down copy of the language model (scripts/device/pack_gemma.py): the embedding rows of the
# workcell's sentences' tokens only, and tokens.json, their ids in it
TRIMMED_MARKER = "nanovla_trimmed.json"


def lm_folder(config: EarlyFusionConfig) -> str:
    """Where the language model is: ``config.lm_dir``, else $NANOVLA_GEMMA_DIR (e.g. a cut-down copy on a lent GPU
    machine, which has no packages), else the packaged Gemma-3-270M."""
    if config.lm_dir or os.environ.get("NANOVLA_GEMMA_DIR"):
        return config.lm_dir or os.environ["NANOVLA_GEMMA_DIR"]
    from nanovla_ros.language.encoders import prepare_gemma

    return str(prepare_gemma())


def build_language_model(config: EarlyFusionConfig) -> nn.Module:
    """The frozen decoder (its text model: embedding table and layers) in eval mode."""
    from transformers import AutoModel, Gemma3TextConfig

    if config.lm_config:
        lm = AutoModel.from_config(Gemma3TextConfig(**json.loads(config.lm_config)), attn_implementation="sdpa")
    else:
        lm = AutoModel.from_pretrained(lm_folder(config), dtype=torch.float32, attn_implementation="sdpa")
    return lm.float().eval().requires_grad_(False)


class EarlyFusionPolicyModel(nn.Module):
    """Image feature maps, instruction token ids and the joint state -> the (H, A) chunk, normalised."""

    def __init__(self, config: EarlyFusionConfig, lm: nn.Module | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.lm = lm if lm is not None else build_language_model(config)
        width = int(self.lm.config.hidden_size)
        n_cells = len(c.cameras) * c.grid * c.grid
        self.image_proj = nn.Linear(c.image_channels, width)
        self.cell_embed = nn.Parameter(torch.randn(n_cells, width) * 0.02)  # (cells of every camera, W)
        self.state_proj = nn.Linear(c.state_dim, width)
        self.action_queries = nn.Parameter(torch.randn(c.horizon, width) * 0.02)  # joint: the queries; else steps
        if c.readout == "autoregressive":
            self.action_in = nn.Linear(c.action_dim, width)  # a normalised action -> part of the next step's token
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, c.action_dim))
        # how the language model is called, found once: one attention mask per layer type, and the cache's keyword
        # (`cache` in newer transformers, `past_key_values` before)
        self._layer_types = set(getattr(self.lm.config, "layer_types", None) or ["full_attention"])
        self._cache_keyword = ("cache" if "cache" in inspect.signature(self.lm.forward).parameters
                               else "past_key_values")
        for name, dim in (("state", c.state_dim), ("action", c.action_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen language model: what a checkpoint holds."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}

    def set_normalization(self, state_mean, state_std, action_mean, action_std) -> None:
        for name, value in (("state_mean", state_mean), ("state_std", state_std), ("action_mean", action_mean),
                            ("action_std", action_std)):
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value), dtype=torch.float32))

    def attention_mask(self, token_mask: torch.Tensor, n_prefix: int) -> torch.Tensor:
        """(B, 1, T, T) bool, True where a position may attend. Joint readout: causal within the prefix (padded
        instruction tokens never attended to), every prefix token and every query for the H queries, no query for
        the prefix. Autoregressive: causal throughout, padding never attended to."""
        H, device = self.config.horizon, token_mask.device
        T = n_prefix + H
        i = torch.arange(T, device=device)
        allowed = i[None, :] <= i[:, None]  # (T, T) causal
        if self.config.readout == "joint":
            allowed = allowed | (i[:, None] >= n_prefix)  # a query's row sees everything ...
            allowed = allowed & ~((i[:, None] < n_prefix) & (i[None, :] >= n_prefix))  # ... and no prefix row a query
        allowed = allowed[None] & self._keys(token_mask, n_prefix, T)[:, None, :]  # (B, T, T)
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=device)[None]  # a padded row attends to itself
        return allowed[:, None]

    @staticmethod
    def _keys(token_mask: torch.Tensor, n_prefix: int, length: int) -> torch.Tensor:
        """(B, length) bool: which positions are real tokens (False: the instruction's padding)."""
        n_image = n_prefix - token_mask.shape[1] - 1
        keys = torch.ones(token_mask.shape[0], length, dtype=torch.bool, device=token_mask.device)
        keys[:, n_image:n_image + token_mask.shape[1]] = token_mask
        return keys

    @staticmethod
    def _positions(keys: torch.Tensor) -> torch.Tensor:
        """(B, T) rotary positions that skip padding: a sentence padded in a batch sits where it sits alone."""
        return (keys.long().cumsum(1) - 1).clamp(min=0)

    def _run_lm(self, inputs: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache=None) -> torch.Tensor:
        extra = {self._cache_keyword: cache, "use_cache": True} if cache is not None else {}
        return self.lm(inputs_embeds=inputs, attention_mask={t: mask for t in self._layer_types},
                       position_ids=positions, **extra).last_hidden_state

    def _prefix(self, image_features: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, P, W): the image cells' tokens, the instruction's tokens, the joint state's token."""
        B = image_features.shape[0]
        cells = image_features.flatten(3).permute(0, 1, 3, 2).reshape(B, -1, image_features.shape[2])  # (B, N*g*g, C)
        image_tokens = self.image_proj(cells) + self.cell_embed[None]  # (B, N*g*g, W)
        text_tokens = self.lm.embed_tokens(tokens)  # (B, T, W): the language model's own (scaled) embeddings
        state_n = (state - self.state_mean) / self.state_std
        return torch.cat([image_tokens, text_tokens, self.state_proj(state_n)[:, None]], dim=1)

    def _step_tokens(self, previous_n: torch.Tensor) -> torch.Tensor:
        """Autoregressive readout: (B, H, A) normalised actions -> (B, H, W), token j = step j's embedding plus the
        projection of action j - 1 (nothing for j = 0: the start token alone)."""
        fed = self.action_in(previous_n[:, :-1])  # (B, H - 1, W)
        return self.action_queries[None] + torch.cat([torch.zeros_like(fed[:, :1]), fed], dim=1)

    def forward(self, image_features: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                state: torch.Tensor, actions: torch.Tensor | None = None,
                action_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``image_features`` (B, N, C, g, g), ``tokens`` (B, T) ids, ``token_mask`` (B, T) bool (False: padding),
        ``state`` (B, S) radians -> (normalised chunk (B, H, A), L1 loss against ``actions`` (B, H, A) radians
        where ``action_mask`` (B, H) holds, else None). The autoregressive readout decodes when ``actions`` is None
        and is teacher-forced on them otherwise."""
        c = self.config
        B = image_features.shape[0]
        prefix = self._prefix(image_features, tokens, state)  # (B, P, W)
        target_n = None if actions is None else (actions - self.action_mean) / self.action_std
        if c.readout == "autoregressive" and target_n is None:
            return self.decode(prefix, token_mask), None
        steps = self.action_queries[None].expand(B, -1, -1) if c.readout == "joint" else self._step_tokens(target_n)
        inputs = torch.cat([prefix, steps], dim=1)  # (B, P + H, W)
        mask = self.attention_mask(token_mask, prefix.shape[1])
        positions = self._positions(self._keys(token_mask, prefix.shape[1], inputs.shape[1]))
        pred_n = self.head(self._run_lm(inputs, mask, positions)[:, -c.horizon:])  # (B, H, A)
        if target_n is None:
            return pred_n, None
        weight = (action_mask if action_mask is not None else torch.ones(actions.shape[:2], dtype=torch.bool,
                                                                         device=actions.device)).float()[..., None]
        loss = ((pred_n - target_n).abs() * weight).sum() / (weight.sum() * c.action_dim).clamp(min=1.0)
        return pred_n, loss

    def decode(self, prefix: torch.Tensor, token_mask: torch.Tensor, static: bool = False) -> torch.Tensor:
        """Autoregressive readout: (B, H, A) normalised, one language-model step per action after the prefix and
        the start token, each step reading the key-value cache of everything before it. ``static``: a cache
        allocated once at its final length (P + H) and written in place, so every step has the same shapes and
        addresses (what a CUDA graph or a compiled step needs); keys not yet written are masked out."""
        from transformers import DynamicCache, StaticCache

        c, B, P = self.config, prefix.shape[0], prefix.shape[1]
        length = P + c.horizon
        cache = (StaticCache(config=self.lm.config, max_cache_len=length) if static
                 else DynamicCache(config=self.lm.config))
        keys = self._keys(token_mask, P, length)  # (B, P + H)
        positions = self._positions(keys)
        first = torch.cat([prefix, self.action_queries[None, :1].expand(B, -1, -1)], dim=1)  # (B, P + 1, W)
        causal = self.attention_mask(token_mask, P)[..., :P + 1, :P + 1]  # the readout is causal: its corner
        if static:  # keys are the whole cache's length: those after the first P + 1 are not written yet
            causal = F.pad(causal, (0, length - (P + 1)), value=False)
        hidden = self._run_lm(first, causal, positions[:, :P + 1], cache)[:, -1]  # (B, W)
        written = torch.arange(length, device=prefix.device)
        out = []
        for j in range(c.horizon):
            out.append(self.head(hidden))  # (B, A): action j
            if j + 1 == c.horizon:
                break
            token = self.action_queries[j + 1][None] + self.action_in(out[-1])  # (B, W)
            # (B, 1, 1, keys): the new token sees everything so far but padding
            step_mask = ((keys & (written < P + j + 2)[None]) if static else keys[:, :P + j + 2])[:, None, None, :]
            hidden = self._run_lm(token[:, None], step_mask, positions[:, P + j + 1:P + j + 2], cache)[:, -1]
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def decode_graphed(self, prefix: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """``decode(static=True)`` with its H - 1 single-token steps replayed from one CUDA graph (CUDA only):
        each eager step launches ~20 kernels a layer and waits on the host, so a chunk is launch-bound; the graph
        launches a step at once. The graph, its cache and its input buffers are made once per (batch, prefix
        length) and reused: only the prefix pass runs eagerly each chunk. Meant to give ``decode``'s numbers; not yet
        run on a GPU (`scripts/bench/bench_early_fusion_decode.py --device cuda` checks and times it), so nothing
        calls it yet."""
        from transformers import StaticCache

        c, B, P = self.config, prefix.shape[0], prefix.shape[1]
        length, device = P + c.horizon, prefix.device
        keys = self._keys(token_mask, P, length)
        positions = self._positions(keys)
        key = (B, P)
        if getattr(self, "_graphs", {}).get(key) is None:
            cache = StaticCache(config=self.lm.config, max_cache_len=length)
            io = {"hidden": torch.zeros(B, prefix.shape[2], device=device, dtype=prefix.dtype),
                  "query": torch.zeros(prefix.shape[2], device=device, dtype=prefix.dtype),
                  "mask": torch.zeros(B, 1, 1, length, dtype=torch.bool, device=device),
                  "position": torch.zeros(B, 1, dtype=torch.long, device=device)}

            def step() -> None:  # action j from hidden j, then hidden j + 1 from action j's token
                io["action"] = self.head(io["hidden"])
                token = io["query"][None] + self.action_in(io["action"])
                io["next"] = self._run_lm(token[:, None], io["mask"], io["position"], cache)[:, -1]

            # the first pass fills the cache's layers (lazily allocated), then warm-up steps on a side stream
            self._run_lm(torch.zeros(B, P + 1, prefix.shape[2], device=device, dtype=prefix.dtype),
                         torch.ones(B, 1, P + 1, length, dtype=torch.bool, device=device), positions[:, :P + 1], cache)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            self._graphs = {**getattr(self, "_graphs", {}), key: (graph, cache, io)}
        graph, cache, io = self._graphs[key]
        for layer in cache.layers:  # rewind: the prefix is written from position 0 again
            layer.cumulative_length.zero_()
            if hasattr(layer, "cumulative_length_int"):  # a sliding-window layer also counts on the host
                layer.cumulative_length_int = 0
        first = torch.cat([prefix, self.action_queries[None, :1].expand(B, -1, -1)], dim=1)
        causal = F.pad(self.attention_mask(token_mask, P)[..., :P + 1, :P + 1], (0, length - (P + 1)), value=False)
        io["hidden"].copy_(self._run_lm(first, causal, positions[:, :P + 1], cache)[:, -1])
        written = torch.arange(length, device=device)
        out = []
        for j in range(c.horizon - 1):
            io["query"].copy_(self.action_queries[j + 1])
            io["mask"].copy_((keys & (written < P + j + 2)[None])[:, None, None, :])
            io["position"].copy_(positions[:, P + j + 1:P + j + 2])
            graph.replay()
            out.append(io["action"].clone())
            io["hidden"].copy_(io["next"])
        out.append(self.head(io["hidden"]))
        return torch.stack(out, dim=1)

    def denormalize_actions(self, actions_n: torch.Tensor) -> torch.Tensor:
        return actions_n * self.action_std + self.action_mean


class WordHashTokenizer:
    """Whitespace words hashed into ids 1..vocab-1 (0 pads), with a leading 2: the tokenizer of a randomly
    initialised language model (``EarlyFusionConfig.lm_config``, tests and timing), which has no vocabulary."""
    pad_token_id = 0

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, text: str) -> dict:
        import zlib

        return {"input_ids": [2] + [1 + zlib.crc32(w.encode()) % (self.vocab_size - 1) for w in text.split()]}


class TableTokenizer:
    """The ids of known sentences, from a cut-down copy's tokens.json; any other sentence is refused."""

    def __init__(self, path: str | Path, pad_token_id: int = 0) -> None:
        self.table, self.pad_token_id = json.loads(Path(path).read_text()), pad_token_id

    def __call__(self, text: str) -> dict:
        if text not in self.table:
            raise ConfigError(f"{text!r} is not one of the sentences the cut-down language model was made for")
        return {"input_ids": self.table[text]}


def is_trimmed(lm_dir: str) -> bool:
    return bool(lm_dir) and (Path(lm_dir) / TRIMMED_MARKER).is_file()


def load_tokenizer(config: EarlyFusionConfig):
    """The language model's tokenizer (``WordHashTokenizer`` for a randomly initialised one; ``TableTokenizer``
    for a cut-down copy)."""
    if config.lm_config:
        return WordHashTokenizer(int(json.loads(config.lm_config)["vocab_size"]))
    folder = lm_folder(config)
    if is_trimmed(folder):
        return TableTokenizer(Path(folder) / "tokens.json",
                              json.loads((Path(folder) / "config.json").read_text()).get("pad_token_id", 0))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def tokenize(texts: list[str], tokenizer, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N, T), mask (N, T)) of ``texts`` by ``tokenizer``, padded to the longest; an instruction of more than
    ``max_tokens`` tokens is refused (naming it), not cut."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    long = [t for t, r in zip(texts, rows, strict=True) if len(r) > max_tokens]
    if long:
        raise ConfigError(f"instruction {long[0]!r} is more than {max_tokens} tokens")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), tokenizer.pad_token_id or 0, np.int64)
    mask = np.zeros((len(rows), width), bool)
    for k, r in enumerate(rows):
        ids[k, :len(r)], mask[k, :len(r)] = r, True
    return ids, mask


def save_early_fusion(model: EarlyFusionPolicyModel, path: str | Path, extra: dict | None = None) -> Path:
    """The trainable weights and normalisation (not the frozen language model) with the config; self-describing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in model.trainable_state().items()}
    config = model.config.to_dict()
    if is_trimmed(model.config.lm_dir):  # it computed what the packaged model computes: deploy with that
        config["lm_dir"] = ""
    metadata = {"format": FORMAT, "config": json.dumps(config), "extra": json.dumps(extra or {})}
    partial = path.with_suffix(path.suffix + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(path)
    return path


def load_early_fusion(path: str | Path, lm: nn.Module | None = None) -> tuple[EarlyFusionPolicyModel, dict]:
    """(model in eval mode, extra) from ``save_early_fusion``'s file; the language model from its package (or
    ``lm``, shared)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ConfigError(f"{str(path)!r} is not an early-fusion checkpoint (format {metadata.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = EarlyFusionPolicyModel(EarlyFusionConfig.from_dict(json.loads(metadata["config"])), lm)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]
    if missing or unexpected:
        raise ConfigError(f"{str(path)!r} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.eval(), json.loads(metadata.get("extra", "{}"))


def early_fusion_metadata(path: str | Path) -> dict | None:
    """The metadata of a ``save_early_fusion`` file (config and extra as JSON text), None for any other file."""
    if not str(path).endswith(".safetensors") or not Path(path).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return metadata if metadata.get("format") == FORMAT else None


def is_early_fusion_checkpoint(path: str | Path) -> bool:
    return early_fusion_metadata(path) is not None


class EarlyFusionPolicy:
    """Frozen image encoder + early-fusion model, for inference: ``predict_chunk(image, state, instruction text)``
    (it reads the instruction's words, not a cached vector: ``reads_text``)."""

    reads_text = True

    def __init__(self, model: EarlyFusionPolicyModel, device: str = "cpu", tokenizer=None) -> None:
        from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder

        self.model = model.eval().to(device)
        self.image_encoder = FrozenImageEncoder("efficientnet-lite0", model.config.image_size).to(device).eval()
        self.tokenizer = tokenizer or load_tokenizer(model.config)
        self.device = device

    @property
    def config(self) -> EarlyFusionConfig:
        return self.model.config

    @torch.inference_mode()
    def predict_chunk(self, image: np.ndarray | dict[str, np.ndarray], state: np.ndarray, instruction: str) -> np.ndarray:
        """{camera: (h, w, 3) uint8 RGB} with every camera of ``config.cameras`` (a one-camera model: the frame
        alone), (S,) radians, the instruction's text -> (H, A) joint targets, radians."""
        c = self.config
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("the early-fusion policy reads the instruction's text: give a non-empty string")
        if state.shape != (c.state_dim,):
            raise ValueError(f"state has shape {state.shape}, expected ({c.state_dim},)")
        if isinstance(image, np.ndarray) and len(c.cameras) == 1:  # a one-camera model may be given the frame
            image = {c.cameras[0]: image}
        missing = [name for name in c.cameras if name not in image]
        if missing:
            raise ValueError(f"no frame from camera(s) {missing}; this model reads {list(c.cameras)}")
        frames = torch.from_numpy(np.stack([image[name] for name in c.cameras])).to(self.device)  # (N, h, w, 3)
        features = self.image_encoder.features(self.image_encoder.preprocess(frames))  # (N, C, g, g)
        ids, mask = tokenize([instruction], self.tokenizer, c.max_instruction_tokens)
        pred_n, _ = self.model(features[None], torch.as_tensor(ids, device=self.device),
                               torch.as_tensor(mask, device=self.device),
                               torch.as_tensor(state, dtype=torch.float32, device=self.device)[None])
        return self.model.denormalize_actions(pred_n)[0].float().cpu().numpy()  # (H, A)

