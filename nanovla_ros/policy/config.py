"""Policy node configuration (the model's own architecture config lands with issue #4)."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import ConfigError, param, require, require_choice
from nanovla_ros.model.photometric import DENOISE_MODES, GAIN_MODES, WORKCELL_REFERENCE_RGB
from nanovla_ros.model.view_warp import IDENTITY as VIEW_IDENTITY
from nanovla_ros.model.view_warp import ViewWarp

DEVICES = ("cpu", "cuda")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class PolicyNodeConfig:
    # --- checkpoints
    checkpoint_small: str = param("", "NanoVLA-S checkpoint (MiniLM instruction features); empty = none.")
    checkpoint_large: str = param("", "NanoVLA-L checkpoint (Gemma-3-270M instruction features); empty = none.")
    device: str = param("cpu", "Inference device: cpu or cuda.")
    backend: str = param("auto", "Inference runtime: torch, onnxruntime (the checkpoint exported to ONNX once and "
                                 "cached; CPU or CUDA provider by device) or tensorrt (ONNX Runtime's TensorRT "
                                 "provider; needs onnxruntime-gpu and tensorrt); auto: onnxruntime on cpu where it is "
                                 "installed (2.2x faster than torch eager on a 2-core CPU, the same closed-loop "
                                 "success), else torch. An .onnx checkpoint needs onnxruntime or tensorrt.")
    precision: str = param("auto", "fp32; int8 (onnxruntime backend: the transformer's matrix products with int8 "
                                    "weights, activations quantised per call; the image encoder stays fp32); fp16 "
                                    "(tensorrt backend: an fp16 engine; torch on cuda: autocast); fp16-weights (torch "
                                    "on cuda: every weight and activation fp16, 1.2x faster than autocast as a CUDA "
                                    "graph on an H100); auto: int8 where the backend is onnxruntime on cpu (1.2x "
                                    "faster there, the same closed-loop success), fp16-weights where it is torch on "
                                    "cuda (318 against fp32's 325 of 400 episodes, same seeds: within fp32's 95 % "
                                    "interval), else fp32.")
    compile: bool = param(False, "torch.compile the per-step path (on cuda it replays as a CUDA graph: ~4x faster).")
    num_threads: int = param(0, "CPU threads for inference (torch's, or ONNX Runtime's intra-op threads); 0 keeps the "
                                  "runtime's default.")
    # --- scheduling (long-short chunking)
    execute_steps: int = param(0, "h: actions of each chunk the driver executes before it needs the next; 0 = what "
                                  "the checkpoint declares (nanovla export --execute-steps), else 10.")
    control_rate_hz: float = param(30.0, "Rate at which chunk actions are spaced (dt_s = 1 / control_rate_hz).")
    replan_rate_hz: float = param(0.0, "Fixed replanning rate; 0 = replan every execute_steps control steps.")
    max_obs_age_ms: float = param(150.0, "Images or joint states older than this are never used for inference.")
    # --- frames
    frame_gain: str = param("off", "Software auto-exposure and white balance before the policy: rgb brings the "
                                   "front frame's mean colour to frame_reference_rgb with one gain per channel and "
                                   "applies the gains to every camera (light x 0.6: 18 against 4 of 24 episodes, "
                                   "colour temperature 4000 K: 16 against 0; scripts/eval/probe_frame_gain.py); "
                                   "luma: one gain (brightness only); off: the frames as they come.")
    frame_reference_rgb: tuple[float, ...] = param(WORKCELL_REFERENCE_RGB, "The front camera's mean colour (R, G, B, "
                                                   "0-255) in the room the policy was trained in (default: the "
                                                   "simulated workcell's).")
    view_homography: tuple[float, ...] = param(VIEW_IDENTITY, "The front camera's view warped to the training "
                                               "camera's before the policy: a homography (row-major 3 x 3, pixels "
                                               "of a 224 x 224 frame) from `nanovla calibrate-view`; the identity "
                                               "(default): as it comes. For a camera that cannot sit where the "
                                               "training camera sat (nanovla_ros/model/view_warp.py).")
    denoise: str = param("off", "Sensor-noise suppression before the policy: gaussian blurs every frame by "
                                "denoise_sigma_px, median takes a 3 x 3 median (at 224 pixels; wider for wider "
                                "frames); off: the frames as they come. Measured (scripts/eval/probe_denoise.py, "
                                "24 episodes each): noise of std 4 / 8 (0-255) 13 / 9 against 3 / 1 succeed with "
                                "gaussian 1.0; it costs the clean scene 378 -> 323 of 400 (the templates): only "
                                "for a camera noisier than it costs.")
    denoise_sigma_px: float = param(1.0, "Gaussian sigma of denoise, in pixels of a 224-pixel-wide frame.")
    # --- instructions
    ground_instructions: bool = param(True, "Ground each task's instruction: at its first chunk the checkpoint's task "
                                            "head reads where the instruction asks to act, and the policy acts on "
                                            "the training phrasing of the task it places there "
                                            "(nanovla_ros/model/grounding.py; the candidates' vectors come from the "
                                            "instruction encoder). Off, or a checkpoint without a task head: the "
                                            "instruction's own vector.")
    ground_max_distance_m: float = param(0.06, "Grounding keeps the instruction's own vector when no candidate task "
                                               "is read within this distance of it (named cube and goal).")

    def __post_init__(self) -> None:
        require_choice("device", self.device, DEVICES)
        require_choice("backend", self.backend, BACKENDS)
        require(self.backend != "tensorrt" or self.device == "cuda", "backend tensorrt runs on device cuda")
        require(not self.compile or self.backend in ("torch", "auto"), "compile applies to the torch backend only")
        require_choice("precision", self.precision, ("auto", "fp32", "int8", "fp16", "fp16-weights"))
        require(self.precision != "fp16-weights" or (self.device == "cuda" and self.resolved_backend == "torch"),
                "precision fp16-weights runs on the torch backend on cuda")
        require(self.precision != "fp16" or self.backend == "tensorrt"
                or (self.device == "cuda" and self.resolved_backend == "torch"),
                "precision fp16 runs on the tensorrt backend, or on the torch backend on cuda")
        require(self.precision != "int8" or self.resolved_backend == "onnxruntime",
                "precision int8 runs on the onnxruntime backend")
        require(self.num_threads >= 0, f"num_threads={self.num_threads} must be >= 0 (0: torch's default)")
        require(self.execute_steps >= 0, f"execute_steps={self.execute_steps} must be >= 0 (0: the checkpoint's)")
        require(0.0 < self.control_rate_hz <= 1000.0, f"control_rate_hz={self.control_rate_hz} must be within (0, 1000]")
        require(self.replan_rate_hz >= 0.0, f"replan_rate_hz={self.replan_rate_hz} must be >= 0")
        require(self.max_obs_age_ms > 0.0, f"max_obs_age_ms={self.max_obs_age_ms} must be positive")
        require_choice("frame_gain", self.frame_gain, GAIN_MODES)
        require_choice("denoise", self.denoise, DENOISE_MODES)
        try:
            ViewWarp(tuple(self.view_homography))
        except ValueError as error:
            raise ConfigError(f"view_homography: {error}") from error
        require(0.0 < self.denoise_sigma_px <= 5.0, f"denoise_sigma_px={self.denoise_sigma_px} must be within (0, 5]")
        require(self.ground_max_distance_m > 0.0, f"ground_max_distance_m={self.ground_max_distance_m} must be positive")
        require(len(self.frame_reference_rgb) == 3 and all(0.0 < v <= 255.0 for v in self.frame_reference_rgb),
                f"frame_reference_rgb={self.frame_reference_rgb} must be three mean values in (0, 255]")

    @property
    def resolved_backend(self) -> str:
        """The runtime ``backend`` names (auto: onnxruntime on cpu where it is installed and compile is off)."""
        if self.backend != "auto":
            return self.backend
        import importlib.util

        onnx = self.device == "cpu" and not self.compile and importlib.util.find_spec("onnxruntime") is not None
        return "onnxruntime" if onnx else "torch"

    @property
    def resolved_precision(self) -> str:
        """The precision ``precision`` names (auto: int8 for onnxruntime on cpu, fp16-weights for torch on cuda,
        else fp32)."""
        if self.precision != "auto":
            return self.precision
        if self.resolved_backend == "onnxruntime" and self.device == "cpu":
            return "int8"
        return "fp16-weights" if self.resolved_backend == "torch" and self.device == "cuda" else "fp32"
