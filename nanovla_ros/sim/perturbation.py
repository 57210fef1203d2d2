"""How a scene may differ from the training workcell (no ROS): the front camera's pose and field of view, the
wrist camera's mount, the lights' intensity, colour and direction, the table's, squares' and cubes' colours,
distractor objects, and the camera sensor (noise, blur, exposure, JPEG).

A ``Perturbation`` is applied to a ``Workcell`` before an episode and undone after it (``apply`` returns the undo).
``SUITE`` names the families of the robustness suite and their graded strengths, from what two real workcells
plausibly differ by to beyond it; ``perturbation(family, strength)`` builds one. Evaluate with
``nanovla evaluate --perturb FAMILY=STRENGTH``.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from nanovla_ros.configuration import ConfigError, param, require

WORKSPACE_CENTRE = (0.21, 0.0)  # metres: the lights turn about the vertical through it


@dataclass(frozen=True)
class Perturbation:
    """All defaults: the training workcell itself."""

    camera_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # front camera moved (world x, y, z), metres
    camera_turn_deg: float = 0.0  # front camera turned about the vertical through it, degrees
    camera_fov_change_deg: float = 0.0  # front camera's vertical field of view (50 degrees) changed by this
    wrist_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # wrist camera moved on its mount (its own axes)
    wrist_tilt_deg: float = 0.0  # wrist camera tilted on its mount (about its own horizontal axis)
    light_scale: float = 1.0  # every light's intensity (and the ambient) times this
    light_colour_k: float = 6500.0  # the lights' colour temperature, kelvin (6500: the workcell's white)
    light_turn_deg: float = 0.0  # every light turned about the vertical through the workspace's centre
    table_scale: float = 1.0  # the table's colour times this (darker below 1)
    table_hue_deg: float = 0.0  # the table's colour turned round the hue circle
    square_scale: float = 1.0  # the target squares' colours times this
    cube_scale: float = 1.0  # the cubes' colours times this (another shade of the same colour)
    distractors: int = 0  # objects on the table that no task names (seen, not touched), up to DISTRACTORS
    image_noise_std: float = 0.0  # Gaussian sensor noise on every rendered frame, in 0-255 units
    blur_px: float = 0.0  # Gaussian blur of every frame (defocus, motion), sigma in pixels of a 224 frame
    exposure: float = 1.0  # the sensor's gain: every frame's values times this, clipped
    jpeg_quality: int = 0  # every frame through JPEG at this quality (1-100); 0: none

    def __post_init__(self) -> None:
        require(self.light_scale > 0.0, f"light_scale={self.light_scale} must be > 0")
        require(1000.0 <= self.light_colour_k <= 40000.0, f"light_colour_k={self.light_colour_k} must be in "
                "[1000, 40000] kelvin")
        for name in ("table_scale", "square_scale", "cube_scale", "image_noise_std", "blur_px"):
            require(getattr(self, name) >= 0.0, f"{name}={getattr(self, name)} must be >= 0")
        require(self.exposure > 0.0, f"exposure={self.exposure} must be > 0")
        require(0 <= self.distractors <= len(DISTRACTORS), f"distractors={self.distractors} must be in "
                f"[0, {len(DISTRACTORS)}]")
        require(0 <= self.jpeg_quality <= 100, f"jpeg_quality={self.jpeg_quality} must be in [0, 100]")
        require(abs(self.camera_fov_change_deg) < 40.0, f"camera_fov_change_deg={self.camera_fov_change_deg} must "
                "be within +-40")

    @property
    def sensor(self) -> bool:
        """Whether frames are changed after rendering (noise, blur, exposure, JPEG)."""
        return bool(self.image_noise_std or self.blur_px or self.exposure != 1.0 or self.jpeg_quality)


# Objects a user's table may hold besides the task's (name, MuJoCo geom type, half-sizes in metres, RGB): none
# has a task's colour or shape. Built into every workcell out of sight; a perturbation puts some on the table.
DISTRACTORS = (
    ("mug", mujoco.mjtGeom.mjGEOM_CYLINDER, (0.03, 0.045, 0.0), (0.35, 0.35, 0.38)),
    ("box", mujoco.mjtGeom.mjGEOM_BOX, (0.04, 0.025, 0.012), (0.8, 0.7, 0.5)),
    ("ball", mujoco.mjtGeom.mjGEOM_SPHERE, (0.022, 0.0, 0.0), (0.1, 0.1, 0.1)),
)

# family -> (strengths, the perturbation of a strength). The strengths but the last are within what real
# workcells plausibly differ by (camera moved up to 3 cm or turned up to 5 degrees, light 50-160 %, other table
# and background colours, two distractors, an ordinary webcam's optics); the last goes beyond.
SUITE: dict[str, tuple[tuple[float, ...], Callable[[float], Perturbation]]] = {
    "camera_shift_cm": ((1.0, 2.0, 3.0, 5.0), lambda cm: Perturbation(camera_shift_m=(0.0, cm / 100.0, 0.0))),
    "camera_height_cm": ((2.0, 3.0, 6.0), lambda cm: Perturbation(camera_shift_m=(0.0, 0.0, cm / 100.0))),
    "camera_turn_deg": ((3.0, 5.0, 8.0), lambda deg: Perturbation(camera_turn_deg=deg)),
    "camera_fov_deg": ((-5.0, 5.0, 12.0), lambda deg: Perturbation(camera_fov_change_deg=deg)),
    "wrist_shift_mm": ((3.0, 5.0, 10.0), lambda mm: Perturbation(wrist_shift_m=(mm / 1000.0, 0.0, 0.0))),
    "wrist_tilt_deg": ((3.0, 5.0, 10.0), lambda deg: Perturbation(wrist_tilt_deg=deg)),
    "light": ((0.5, 0.6, 1.4, 1.6, 2.0), lambda scale: Perturbation(light_scale=scale)),
    "light_colour_k": ((4000.0, 9000.0, 2700.0), lambda k: Perturbation(light_colour_k=k)),
    "light_turn_deg": ((45.0, 90.0, 180.0), lambda deg: Perturbation(light_turn_deg=deg)),
    "table": ((0.8, 0.6), lambda scale: Perturbation(table_scale=scale)),
    "table_hue_deg": ((30.0, 60.0, 150.0), lambda deg: Perturbation(table_hue_deg=deg)),
    "squares": ((0.85, 0.7, 0.5), lambda scale: Perturbation(square_scale=scale)),
    "cube_shade": ((0.8, 1.2, 0.6), lambda scale: Perturbation(cube_scale=scale)),
    "distractors": ((1.0, 2.0, 3.0), lambda n: Perturbation(distractors=int(n))),
    "noise": ((4.0, 8.0, 16.0), lambda std: Perturbation(image_noise_std=std)),
    "blur_px": ((0.5, 1.0, 2.0), lambda sigma: Perturbation(blur_px=sigma)),
    "exposure": ((0.7, 1.3, 1.8), lambda gain: Perturbation(exposure=gain)),
    "jpeg_quality": ((60.0, 30.0, 10.0), lambda q: Perturbation(jpeg_quality=int(q))),
}


def plausible_strengths(family: str) -> tuple[float, ...]:
    """The strengths of ``family`` a real workcell plausibly differs by (all but the last)."""
    return SUITE[family][0][:-1]


@dataclass
class SensorEffects:
    """What a camera does to a rendered frame, in a camera's order: gain (exposure), blur, noise, JPEG."""

    rng: np.random.Generator
    noise_std: float = 0.0  # 0-255 units
    blur_px: float = 0.0  # Gaussian sigma, pixels of a 224 frame (scaled with the frame)
    exposure: float = 1.0
    jpeg_quality: int = 0  # 0: none

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        out = frame.astype(np.float64)
        if self.exposure != 1.0:
            out *= self.exposure
        if self.blur_px:
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=self.blur_px * frame.shape[1] / 224.0)
        if self.noise_std:
            out += self.rng.normal(0.0, self.noise_std, frame.shape)
        out = np.clip(out, 0, 255).astype(np.uint8)
        if self.jpeg_quality:
            _, data = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            out = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
        return out


@dataclass(frozen=True)
class RandomisationConfig:
    """Ranges a randomised episode draws its perturbation from (uniformly, seeded per episode): for collecting
    demonstrations a policy must generalise from (`nanovla collect --in-process --randomise`). Each range covers
    the suite's plausible strengths of its family, not the strengths beyond."""

    camera_shift_m: float = param(0.03, "Front camera moved by up to this along each of x, y, z, metres.")
    camera_turn_deg: float = param(5.0, "Front camera turned by up to this either way about the vertical, degrees.")
    camera_fov_change_deg: float = param(5.0, "Front camera's field of view changed by up to this either way.")
    wrist_shift_m: float = param(0.005, "Wrist camera moved on its mount by up to this along each axis, metres.")
    wrist_tilt_deg: float = param(5.0, "Wrist camera tilted on its mount by up to this either way, degrees.")
    light_scale_range: tuple[float, ...] = param((0.5, 1.6), "Lights' intensity factor, (low, high).")
    light_colour_k_range: tuple[float, ...] = param((3500.0, 9500.0), "Lights' colour temperature, kelvin.")
    light_turn_deg: float = param(90.0, "Lights turned by up to this either way about the vertical, degrees.")
    table_scale_range: tuple[float, ...] = param((0.7, 1.15), "Table colour factor, (low, high).")
    table_hue_deg: float = param(60.0, "Table colour turned round the hue circle by up to this either way.")
    square_scale_range: tuple[float, ...] = param((0.7, 1.1), "Target squares' colour factor, (low, high).")
    cube_scale_range: tuple[float, ...] = param((0.8, 1.2), "Cubes' colour factor, (low, high).")
    distractors: int = param(2, "Up to this many distractor objects on the table.")
    image_noise_std: float = param(8.0, "Sensor noise std up to this, in 0-255 units.")
    blur_px: float = param(1.0, "Blur sigma up to this, pixels of a 224 frame.")
    exposure_range: tuple[float, ...] = param((0.7, 1.3), "Sensor gain, (low, high).")
    jpeg_quality_range: tuple[float, ...] = param((30.0, 100.0), "JPEG quality, (low, high); 100: none.")

    def __post_init__(self) -> None:
        for name in ("light_scale_range", "light_colour_k_range", "table_scale_range", "square_scale_range",
                     "cube_scale_range", "exposure_range", "jpeg_quality_range"):
            low, high = getattr(self, name)
            require(0.0 < low <= high, f"{name}={getattr(self, name)} must be (low, high) with 0 < low <= high")
        for name in ("camera_shift_m", "camera_turn_deg", "camera_fov_change_deg", "wrist_shift_m", "wrist_tilt_deg",
                     "light_turn_deg", "table_hue_deg", "image_noise_std", "blur_px"):
            require(getattr(self, name) >= 0.0, f"{name}={getattr(self, name)} must be >= 0")
        require(0 <= self.distractors <= len(DISTRACTORS), f"distractors must be in [0, {len(DISTRACTORS)}]")

    def sample(self, rng: np.random.Generator) -> Perturbation:
        def either_way(limit: float) -> float:
            return float(rng.uniform(-limit, limit))

        quality = int(round(rng.uniform(*self.jpeg_quality_range)))
        return Perturbation(
            camera_shift_m=tuple(float(v) for v in rng.uniform(-self.camera_shift_m, self.camera_shift_m, 3)),
            camera_turn_deg=either_way(self.camera_turn_deg),
            camera_fov_change_deg=either_way(self.camera_fov_change_deg),
            wrist_shift_m=tuple(float(v) for v in rng.uniform(-self.wrist_shift_m, self.wrist_shift_m, 3)),
            wrist_tilt_deg=either_way(self.wrist_tilt_deg),
            light_scale=float(rng.uniform(*self.light_scale_range)),
            light_colour_k=float(rng.uniform(*self.light_colour_k_range)),
            light_turn_deg=either_way(self.light_turn_deg),
            table_scale=float(rng.uniform(*self.table_scale_range)),
            table_hue_deg=either_way(self.table_hue_deg),
            square_scale=float(rng.uniform(*self.square_scale_range)),
            cube_scale=float(rng.uniform(*self.cube_scale_range)),
            distractors=int(rng.integers(0, self.distractors + 1)),
            image_noise_std=float(rng.uniform(0.0, self.image_noise_std)),
            blur_px=float(rng.uniform(0.0, self.blur_px)),
            exposure=float(rng.uniform(*self.exposure_range)),
            jpeg_quality=0 if quality >= 100 else quality)


# Looks drawn per episode (seeded by the episode's seed) instead of one named condition: "random" every family from
# RandomisationConfig's ranges at once (what the workcell node's look "random" does), "random_camera" only the
# front camera's pose and field of view from that same draw (shifted up to 3 cm along each axis, turned and zoomed
# up to 5 degrees: where a user's camera may sit)
RANDOM_LOOKS = ("random", "random_camera")


def random_look(name: str, seed: int, config: RandomisationConfig | None = None) -> Perturbation:
    """The look ``name`` (of RANDOM_LOOKS) of the episode of ``seed``."""
    if name not in RANDOM_LOOKS:
        raise ConfigError(f"random look {name!r} is not one of {list(RANDOM_LOOKS)}")
    drawn = (config or RandomisationConfig()).sample(np.random.default_rng([seed, 13]))
    if name == "random":
        return drawn
    return Perturbation(camera_shift_m=drawn.camera_shift_m, camera_turn_deg=drawn.camera_turn_deg,
                        camera_fov_change_deg=drawn.camera_fov_change_deg)


def perturbation(family: str, strength: float) -> Perturbation:
    if family not in SUITE:
        raise ConfigError(f"perturbation family {family!r} is not one of {list(SUITE)}")
    return SUITE[family][1](float(strength))


def parse(text: str, seed: int = 0) -> Perturbation:
    """"FAMILY=STRENGTH" (e.g. "light=0.6") -> the perturbation; "" -> none; one of RANDOM_LOOKS -> the look of
    the episode of ``seed``."""
    if not text:
        return Perturbation()
    if text in RANDOM_LOOKS:
        return random_look(text, seed)
    family, sep, value = text.partition("=")
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not sep or not math.isfinite(strength):
        raise ConfigError(f"perturbation {text!r} is not FAMILY=STRENGTH, e.g. light=0.6; families: {list(SUITE)}")
    return perturbation(family, strength)


def _turned(quat: np.ndarray, degrees: float, axis: tuple[float, float, float], local: bool = False) -> np.ndarray:
    """``quat`` (w, x, y, z) turned about ``axis``: the world's (before it) or, ``local``, its own (after it)."""
    half = math.radians(degrees) / 2.0
    turn = np.array([math.cos(half), *(math.sin(half) * np.asarray(axis, dtype=float))])
    out = np.empty(4)
    if local:
        mujoco.mju_mulQuat(out, np.asarray(quat, dtype=float), turn)
    else:
        mujoco.mju_mulQuat(out, turn, np.asarray(quat, dtype=float))
    return out


def kelvin_gains(kelvin: float) -> np.ndarray:
    """(3,) RGB factors that turn the workcell's white light (6500 K) into light of ``kelvin`` (a black body's
    colour, the usual curve fit to it)."""
    def rgb(k: float) -> np.ndarray:
        t = k / 100.0
        r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
        g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
        b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
        return np.clip(np.array([r, g, b]), 0.0, 255.0) / 255.0

    return rgb(kelvin) / rgb(6500.0)


def _hue_turned(rgb: np.ndarray, degrees: float) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*np.clip(rgb, 0.0, 1.0))
    return np.array(colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v))


def apply(workcell, p: Perturbation, rng: np.random.Generator | None = None) -> Callable[[], None]:
    """Change ``workcell`` as ``p`` says; return the function that puts it back. Distractors are placed by the
    workcell's next ``place`` (where the scene's objects are known); ``rng`` draws their places and the noise."""
    rng = rng or np.random.default_rng(0)
    model = workcell.model
    front, wrist = model.camera("front").id, model.camera("wrist").id
    table = model.geom("table").id
    squares = [model.geom(n).id for n in _names(model, "square_")]
    cubes = [model.geom(n).id for n in _names(model, "cube_")]
    coloured = [table, *squares, *cubes]
    saved = (model.cam_pos.copy(), model.cam_quat.copy(), model.cam_fovy.copy(), model.light_diffuse.copy(),
             model.light_ambient.copy(), model.vis.headlight.ambient.copy(), model.light_pos.copy(),
             model.light_dir.copy(), model.geom_rgba[coloured].copy())
    model.cam_pos[front] += np.asarray(p.camera_shift_m)
    model.cam_quat[front] = _turned(model.cam_quat[front], p.camera_turn_deg, (0.0, 0.0, 1.0))
    model.cam_fovy[front] += p.camera_fov_change_deg
    wrist_axes = np.empty(9)
    mujoco.mju_quat2Mat(wrist_axes, model.cam_quat[wrist])
    model.cam_pos[wrist] += wrist_axes.reshape(3, 3) @ np.asarray(p.wrist_shift_m)  # along the camera's own axes
    model.cam_quat[wrist] = _turned(model.cam_quat[wrist], p.wrist_tilt_deg, (1.0, 0.0, 0.0), local=True)
    gains = kelvin_gains(p.light_colour_k) * p.light_scale
    model.light_diffuse[:] = np.clip(model.light_diffuse * gains, 0.0, None)
    model.light_ambient[:] = np.clip(model.light_ambient * gains, 0.0, None)
    model.vis.headlight.ambient[:] = np.clip(model.vis.headlight.ambient * gains, 0.0, 1.0)
    if p.light_turn_deg:
        turn = np.empty(9)
        mujoco.mju_quat2Mat(turn, _turned(np.array([1.0, 0.0, 0.0, 0.0]), p.light_turn_deg, (0.0, 0.0, 1.0)))
        turn = turn.reshape(3, 3)
        centre = np.array([*WORKSPACE_CENTRE, 0.0])
        model.light_pos[:] = (model.light_pos - centre) @ turn.T + centre
        model.light_dir[:] = model.light_dir @ turn.T
    if p.table_hue_deg:
        model.geom_rgba[table, :3] = _hue_turned(model.geom_rgba[table, :3], p.table_hue_deg)
    model.geom_rgba[table, :3] = np.clip(model.geom_rgba[table, :3] * p.table_scale, 0.0, 1.0)
    model.geom_rgba[squares, :3] = np.clip(model.geom_rgba[squares, :3] * p.square_scale, 0.0, 1.0)
    model.geom_rgba[cubes, :3] = np.clip(model.geom_rgba[cubes, :3] * p.cube_scale, 0.0, 1.0)
    workcell.sensor = SensorEffects(rng, p.image_noise_std, p.blur_px, p.exposure, p.jpeg_quality) \
        if p.sensor else None
    if p.distractors:  # (drawn only then: the noise of a seed stays what it was without this family)
        workcell.distractors = (rng.permutation(len(DISTRACTORS))[:p.distractors].tolist(), rng)
    mujoco.mj_kinematics(model, workcell.data)  # the cameras' poses in the scene follow their model poses
    mujoco.mj_camlight(model, workcell.data)

    def undo() -> None:
        (model.cam_pos[:], model.cam_quat[:], model.cam_fovy[:], model.light_diffuse[:], model.light_ambient[:],
         model.vis.headlight.ambient[:], model.light_pos[:], model.light_dir[:]) = saved[:8]
        model.geom_rgba[coloured] = saved[8]
        workcell.sensor = None
        workcell.distractors = ([], None)
        workcell.park_distractors()
        mujoco.mj_kinematics(model, workcell.data)
        mujoco.mj_camlight(model, workcell.data)

    return undo


def _names(model: mujoco.MjModel, prefix: str) -> list[str]:
    return [model.geom(i).name for i in range(model.ngeom) if model.geom(i).name.startswith(prefix)]
