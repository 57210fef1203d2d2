"""Policy inference scheduling (no ROS imports): which checkpoint serves the current task, whether the
observation is fresh enough, and one NanoVLA pass producing an action chunk."""
from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from nanovla_ros.configuration import ConfigError
from nanovla_ros.language.encoders import encoder_id
from nanovla_ros.model.view_warp import ViewWarp
from nanovla_ros.policy.config import PolicyNodeConfig

log = logging.getLogger(__name__)


def steps_to_execute(execute_steps: int, horizon: int, delay_steps: int) -> int:
    """h for a chunk of ``horizon`` actions that reaches the driver ``delay_steps`` control steps after its image:
    the driver skips the past actions and runs h from there, and the next chunk comes h steps later, so h <= H - D
    (at least 1), and at most ``execute_steps``."""
    return max(1, min(execute_steps, horizon - delay_steps))


def camera_topic(camera: str) -> str:
    """Image topic of a camera a checkpoint names: front -> camera/image_raw, wrist -> wrist_camera/image_raw."""
    return "camera/image_raw" if camera == "front" else f"{camera}_camera/image_raw"


@dataclass(frozen=True)
class Observation:
    image: np.ndarray  # (h, w, 3) uint8 RGB, front camera
    image_stamp_ns: int  # integers: the chunk carries the image's stamp exactly
    state: np.ndarray  # (J,) radians
    state_stamp_ns: int
    joint_names: tuple[str, ...]
    other_images: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)  # camera -> (frame, stamp ns)


@dataclass(frozen=True)
class Task:
    instruction_id: int
    backbone: str
    encoder_id: str
    embedding: np.ndarray  # (L,)
    text: str = ""  # the instruction's words (what an early-fusion checkpoint reads instead of the vector)


@dataclass(frozen=True)
class ChunkResult:
    positions: np.ndarray  # (H, J) radians
    stamp_ns: int  # the observation's time (the image stamp)
    latency_ms: float
    backbone: str
    instruction_id: int
    joint_names: tuple[str, ...]
    grounded_as: str | None = None  # grounding on: the candidate the policy acted on (None: the instruction's own)


@dataclass(frozen=True)
class Skip:
    """No chunk this time, and why (said once per distinct reason by the node)."""

    reason: str


class PolicyRunner:
    def __init__(self, config: PolicyNodeConfig) -> None:
        from nanovla_ros.model.checkpoint import DEFAULT_EXECUTE_STEPS, declared_execute_steps, load_checkpoint
        from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder, NanoVLAPolicy

        self.config = config
        if config.num_threads:
            import torch

            torch.set_num_threads(config.num_threads)
        self.policies: dict[str, NanoVLAPolicy] = {}
        self.grounders: dict = {}  # backbone -> GroundedPolicy (ground_instructions, a checkpoint with a task head)
        self._grounded_task: dict[str, int] = {}  # backbone -> the instruction id its grounding is for
        declared: list[int] = []  # the h each loaded checkpoint declares
        image_encoders: dict[str, FrozenImageEncoder] = {}  # S and L share one frozen image encoder
        for backbone, path in (("small", config.checkpoint_small), ("large", config.checkpoint_large)):
            if not path:
                continue
            backend = config.resolved_backend
            from nanovla_ros.model.early_fusion import is_early_fusion_checkpoint

            if is_early_fusion_checkpoint(path):  # the early-fusion baseline: torch, reads the instruction's words
                from nanovla_ros.model.onnx_policy import load_policy

                self.policies[backbone], extra = load_policy(path, "torch", config.device)
                c = self.policies[backbone].config
                backend = "torch (early fusion)"
            elif backend == "torch":
                model, extra = load_checkpoint(path, config.device, expected_language_encoder_id=encoder_id(backbone))
                c = model.config
                key = c.image_encoder_id
                if key not in image_encoders:
                    image_encoders[key] = FrozenImageEncoder(c.image_encoder, c.image_size, c.image_weights_path,
                                                               c.image_stride, c.fine_features).to(config.device)
                precision = config.resolved_precision  # fp16: autocast; fp16-weights: the whole step in fp16
                # (its own image encoder then: a shared one would be cast under the other policy)
                encoder = (FrozenImageEncoder(c.image_encoder, c.image_size, c.image_weights_path, c.image_stride,
                                              c.fine_features).to(config.device)
                           if precision == "fp16-weights" else image_encoders[key])
                self.policies[backbone] = NanoVLAPolicy(model, encoder, fp16=precision == "fp16",
                                                        half_weights=precision == "fp16-weights")
                if config.compile:
                    self.policies[backbone].compile()
            else:  # ONNX Runtime (CPU / CUDA provider) or its TensorRT provider; exported once and cached
                from nanovla_ros.model.onnx_policy import load_policy

                self.policies[backbone], extra = load_policy(path, backend, config.device, config.num_threads,
                                                             precision=config.resolved_precision,
                                                             expected_language_encoder_id=encoder_id(backbone))
                c = self.policies[backbone].config
            if config.ground_instructions and not is_early_fusion_checkpoint(path):
                self._add_grounding(backbone, path)
            # the frames' corrections, in order: the front camera's view to the training camera's, sensor noise,
            # then auto-exposure / white balance from the front frame (each off unless configured)
            from nanovla_ros.model.photometric import FrameDenoise, FrameGain, read_through

            self.policies[backbone] = read_through(self.policies[backbone], (
                ViewWarp(tuple(config.view_homography)),
                FrameDenoise(config.denoise, config.denoise_sigma_px) if config.denoise != "off" else None,
                FrameGain(config.frame_gain, tuple(config.frame_reference_rgb))))
            declared.append(min(declared_execute_steps(extra), c.horizon))
            if c.cameras[0] != "front":
                raise ConfigError(f"{path} reads the cameras {list(c.cameras)}; the policy node needs the front camera "
                                  f"(camera/image_raw) first")
            self._warm_up(self.policies[backbone])
            log.info("NanoVLA-%s loaded from %s (H=%d, declares h=%d; %s)", backbone[0].upper(), path, c.horizon,
                     declared[-1], backend)
        # h: the parameter, else what the checkpoints declare (one timer replans for both: the smaller, so that
        # neither runs out of actions); the most a chunk runs (effective_steps: less on a slow host)
        self.execute_steps = config.execute_steps or min(declared, default=DEFAULT_EXECUTE_STEPS)
        self.horizon = min((p.config.horizon for p in self.policies.values()), default=self.execute_steps)
        self._delays_s: collections.deque[float] = collections.deque(maxlen=9)  # image -> chunk ready, recent

    def _add_grounding(self, backbone: str, path: str) -> None:
        """Wrap the backbone's policy so that it acts on grounded instructions (its task head read in torch, fp32)."""
        from nanovla_ros.model.checkpoint import load_checkpoint
        from nanovla_ros.model.grounding import GroundedPolicy, TaskReader

        model, _ = load_checkpoint(path, self.config.device)
        if model.task_head is None:
            log.warning("NanoVLA-%s: %s has no task head: its instructions are not grounded", backbone[0].upper(), path)
            return
        self.grounders[backbone] = GroundedPolicy(self.policies[backbone], TaskReader(model, self.config.device),
                                                  max_distance_m=self.config.ground_max_distance_m)
        self.policies[backbone] = self.grounders[backbone]

    def wants_candidates(self) -> list[str]:
        """Backbones whose grounding still needs the candidate instructions' vectors (``set_candidates``)."""
        return [b for b, g in self.grounders.items() if not g.has_candidates]

    def set_candidates(self, backbone: str, vectors: dict[str, np.ndarray], encoder: str) -> None:
        """The candidates' vectors for ``backbone``, from ``encoder`` (which must be what its checkpoint reads)."""
        wanted = self.policies[backbone].config.language_encoder_id
        if encoder != wanted:
            raise ConfigError(f"candidate vectors from {encoder!r}; the {backbone} checkpoint reads {wanted!r}")
        self.grounders[backbone].set_candidates(vectors)

    @property
    def other_cameras(self) -> list[str]:
        """Cameras besides the front one that the loaded checkpoints read (each needs its image topic)."""
        return sorted({c for p in self.policies.values() for c in p.config.cameras if c != "front"})

    @staticmethod
    def _warm_up(policy) -> None:
        """One pass on a blank observation at load: the first pass is several times slower (allocations, kernels),
        which would otherwise delay the first chunk and count in delay_steps."""
        c = policy.config
        blank = np.zeros((c.image_size, c.image_size, 3), np.uint8)
        instruction = "touch the red cube" if getattr(policy, "reads_text", False) else np.zeros(c.language_dim,
                                                                                                 np.float32)
        policy.predict_chunk(blank if len(c.cameras) == 1 else {camera: blank for camera in c.cameras},
                             np.zeros(c.state_dim, np.float32), instruction)

    @property
    def delay_steps(self) -> int:
        """Control steps from an image to its chunk being ready (the image's age at inference plus the inference;
        the median of the last few chunks, rounded up): the actions of a chunk that are past when it arrives."""
        if not self._delays_s:
            return 0
        return math.ceil(float(np.median(self._delays_s)) * self.config.control_rate_hz - 1e-9)

    @property
    def effective_steps(self) -> int:
        """h for the next chunk (``steps_to_execute`` with the measured delay): execute_steps, less where a chunk
        would run out before the next one arrives. An H = 100 model at h = 10 never meets the limit; an H = 20 one at
        h = 20 does on a 2-core CPU (D = 11-18), not on a GPU (D ~ 1)."""
        return steps_to_execute(self.execute_steps, self.horizon, self.delay_steps)

    @property
    def period_s(self) -> float:
        """Replanning period: every effective_steps control steps, or 1 / replan_rate_hz."""
        if self.config.replan_rate_hz > 0:
            return 1.0 / self.config.replan_rate_hz
        return self.effective_steps / self.config.control_rate_hz

    def step(self, observation: Observation | None, task: Task | None, now_s: float) -> ChunkResult | Skip:
        if task is None:
            return Skip("no task yet: send an instruction (nanovla instruct ...)")
        policy = self.policies.get(task.backbone)
        if policy is None:
            return Skip(f"no checkpoint for the {task.backbone} backbone (set checkpoint_{task.backbone})")
        reads_text = getattr(policy, "reads_text", False)
        if reads_text and not task.text.strip():
            return Skip(f"task {task.instruction_id} came without its text; this checkpoint reads the instruction's words")
        if not reads_text and policy.config.language_encoder_id != task.encoder_id:
            return Skip(f"task {task.instruction_id} was encoded by {task.encoder_id!r}, the {task.backbone} "
                        f"checkpoint reads {policy.config.language_encoder_id!r}")
        if observation is None:
            return Skip("no camera image or joint state received yet")
        frames = {"front": observation.image}
        stamps = [("camera image", observation.image_stamp_ns), ("joint state", observation.state_stamp_ns)]
        for camera in policy.config.cameras[1:]:
            if camera not in observation.other_images:
                return Skip(f"no image from the {camera} camera ({camera_topic(camera)}) yet: this checkpoint reads "
                            f"{list(policy.config.cameras)} (launch with {camera}_camera:=true)")
            frames[camera], stamp_ns = observation.other_images[camera]
            stamps.append((f"{camera} camera image", stamp_ns))
        max_age_s = self.config.max_obs_age_ms / 1e3
        for what, stamp_ns in stamps:
            stamp = stamp_ns / 1e9
            if now_s - stamp > max_age_s:
                return Skip(f"the latest {what} is {(now_s - stamp) * 1e3:.0f} ms old, over "
                            f"max_obs_age_ms={self.config.max_obs_age_ms:g}: not used")
        if observation.state.shape[0] != policy.config.state_dim:
            return Skip(f"joint state has {observation.state.shape[0]} joints, the policy expects {policy.config.state_dim}")
        grounder = self.grounders.get(task.backbone)
        if grounder is not None and self._grounded_task.get(task.backbone) != task.instruction_id:
            grounder.begin_task()  # a new task: its first chunk grounds the instruction
            self._grounded_task[task.backbone] = task.instruction_id
        start = time.perf_counter()
        image = observation.image if len(policy.config.cameras) == 1 else frames
        positions = policy.predict_chunk(image, observation.state.astype(np.float32),
                                         task.text if reads_text else np.asarray(task.embedding, dtype=np.float32))
        latency_ms = (time.perf_counter() - start) * 1e3
        self._delays_s.append(now_s - observation.image_stamp_ns / 1e9 + latency_ms / 1e3)
        return ChunkResult(positions, observation.image_stamp_ns, latency_ms, task.backbone, task.instruction_id,
                           observation.joint_names,
                           grounded_as=None if grounder is None else grounder.last.get("candidate"))
