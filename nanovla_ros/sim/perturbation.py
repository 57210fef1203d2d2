"""How a scene may differ from the training workcell: camera pose, light, table colour, sensor noise (no ROS).

A ``Perturbation`` is applied to a ``Workcell`` before an episode and undone after it (``apply`` returns the undo).
``SUITE`` names the families of the robustness suite and their graded strengths, from what two real workcells
plausibly differ by to beyond it; ``perturbation(family, strength)`` builds one. Evaluate with
``nanovla evaluate --perturb FAMILY=STRENGTH``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from nanovla_ros.configuration import ConfigError, param, require


@dataclass(frozen=True)
class Perturbation:
    """All defaults: the training workcell itself."""

    camera_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # front camera moved (world x, y, z), metres
    camera_turn_deg: float = 0.0  # front camera turned about the vertical through it, degrees
    light_scale: float = 1.0  # every light's intensity (and the ambient) times this
    table_scale: float = 1.0  # the table's colour times this (darker below 1)
    image_noise_std: float = 0.0  # Gaussian sensor noise on every rendered frame, in 0-255 units

    def __post_init__(self) -> None:
        require(self.light_scale > 0.0, f"light_scale={self.light_scale} must be > 0")
        require(self.table_scale >= 0.0, f"table_scale={self.table_scale} must be >= 0")
        require(self.image_noise_std >= 0.0, f"image_noise_std={self.image_noise_std} must be >= 0")


# family -> (strengths, the perturbation of a strength). The first strengths are within what real workcells
# plausibly differ by (camera moved up to 3 cm or turned up to 5 degrees, light 50-160 %); the last go beyond.
SUITE: dict[str, tuple[tuple[float, ...], Callable[[float], Perturbation]]] = {
    "camera_shift_cm": ((1.0, 2.0, 3.0, 5.0), lambda cm: Perturbation(camera_shift_m=(0.0, cm / 100.0, 0.0))),
    "camera_turn_deg": ((3.0, 5.0, 8.0), lambda deg: Perturbation(camera_turn_deg=deg)),
    "light": ((0.5, 0.6, 1.4, 1.6, 2.0), lambda scale: Perturbation(light_scale=scale)),
    "table": ((0.8, 0.6), lambda scale: Perturbation(table_scale=scale)),
    "noise": ((4.0, 8.0, 16.0), lambda std: Perturbation(image_noise_std=std)),
}


@dataclass(frozen=True)
class RandomisationConfig:
    """Ranges a randomised episode draws its perturbation from (uniformly, seeded per episode): for collecting
    demonstrations a policy must generalise from (`nanovla collect --in-process --randomise`)."""

    camera_shift_m: float = param(0.03, "Front camera moved by up to this along each of x, y, z, metres.")
    camera_turn_deg: float = param(5.0, "Front camera turned by up to this either way about the vertical, degrees.")
    light_scale_range: tuple[float, ...] = param((0.5, 1.6), "Lights' intensity factor, (low, high).")
    table_scale_range: tuple[float, ...] = param((0.7, 1.15), "Table colour factor, (low, high).")
    image_noise_std: float = param(6.0, "Sensor noise std up to this, in 0-255 units.")

    def __post_init__(self) -> None:
        for name in ("light_scale_range", "table_scale_range"):
            low, high = getattr(self, name)
            require(0.0 < low <= high, f"{name}={getattr(self, name)} must be (low, high) with 0 < low <= high")
        require(self.camera_shift_m >= 0.0 and self.camera_turn_deg >= 0.0 and self.image_noise_std >= 0.0,
                "camera_shift_m, camera_turn_deg and image_noise_std must be >= 0")

    def sample(self, rng: np.random.Generator) -> Perturbation:
        return Perturbation(
            camera_shift_m=tuple(float(v) for v in rng.uniform(-self.camera_shift_m, self.camera_shift_m, 3)),
            camera_turn_deg=float(rng.uniform(-self.camera_turn_deg, self.camera_turn_deg)),
            light_scale=float(rng.uniform(*self.light_scale_range)),
            table_scale=float(rng.uniform(*self.table_scale_range)),
            image_noise_std=float(rng.uniform(0.0, self.image_noise_std)))


def perturbation(family: str, strength: float) -> Perturbation:
    if family not in SUITE:
        raise ConfigError(f"perturbation family {family!r} is not one of {list(SUITE)}")
    return SUITE[family][1](float(strength))


def parse(text: str) -> Perturbation:
    """"FAMILY=STRENGTH" (e.g. "light=0.6") -> the perturbation; "" -> none."""
    if not text:
        return Perturbation()
    family, sep, value = text.partition("=")
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not sep or not math.isfinite(strength):
        raise ConfigError(f"perturbation {text!r} is not FAMILY=STRENGTH, e.g. light=0.6; families: {list(SUITE)}")
    return perturbation(family, strength)


def _yaw(quat: np.ndarray, degrees: float) -> np.ndarray:
    """``quat`` (w, x, y, z) turned about the world's vertical."""
    half = math.radians(degrees) / 2.0
    turn = np.array([math.cos(half), 0.0, 0.0, math.sin(half)])
    out = np.empty(4)
    mujoco.mju_mulQuat(out, turn, np.asarray(quat, dtype=float))
    return out


def apply(workcell, p: Perturbation, rng: np.random.Generator | None = None) -> Callable[[], None]:
    """Change ``workcell`` as ``p`` says; return the function that puts it back."""
    model = workcell.model
    cam = model.camera("front").id
    table = model.geom("table").id
    saved = (model.cam_pos[cam].copy(), model.cam_quat[cam].copy(), model.light_diffuse.copy(),
             model.light_ambient.copy(), model.vis.headlight.ambient.copy(), model.geom_rgba[table].copy())
    model.cam_pos[cam] += np.asarray(p.camera_shift_m)
    model.cam_quat[cam] = _yaw(model.cam_quat[cam], p.camera_turn_deg)
    model.light_diffuse[:] = np.clip(model.light_diffuse * p.light_scale, 0.0, None)
    model.light_ambient[:] = np.clip(model.light_ambient * p.light_scale, 0.0, None)
    model.vis.headlight.ambient[:] = np.clip(model.vis.headlight.ambient * p.light_scale, 0.0, 1.0)
    model.geom_rgba[table, :3] = np.clip(model.geom_rgba[table, :3] * p.table_scale, 0.0, 1.0)
    workcell.image_noise = (p.image_noise_std, rng or np.random.default_rng(0)) if p.image_noise_std else None
    mujoco.mj_kinematics(model, workcell.data)  # the camera's pose in the scene follows its model pose
    mujoco.mj_camlight(model, workcell.data)

    def undo() -> None:
        model.cam_pos[cam], model.cam_quat[cam] = saved[0], saved[1]
        model.light_diffuse[:], model.light_ambient[:] = saved[2], saved[3]
        model.vis.headlight.ambient[:] = saved[4]
        model.geom_rgba[table] = saved[5]
        workcell.image_noise = None
        mujoco.mj_kinematics(model, workcell.data)
        mujoco.mj_camlight(model, workcell.data)

    return undo
