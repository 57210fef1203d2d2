"""What the viewer shows, as Rerun entities (no ROS imports): both cameras, joint states and commands, each
action chunk as the planned future of every joint and of the gripper point in 3D (from the URDF's kinematics), the
arm itself (the URDF posed by the joint states), the instruction, the route decision and the episode's outcome.

Entity paths (the layout in ``blueprint()``; ``config/viewer.rbl`` is the same layout saved for the Rerun app):
  cameras/<name>                 the camera frames
  joints/state/<joint>, joints/command/<joint>   scalars, radians (the gripper too)
  plan/joints/<joint>            the newest chunk: radians against seconds ahead (x)
  robot/...                      the URDF, posed; robot/gripper_point (its trail), robot/plan (the chunk's path)
  events                         instruction, route decision, chunk latency, outcome (a text log)
Time: the ``time`` timeline, seconds since the recording (or the live view) began.
"""
from __future__ import annotations

import numpy as np

from nanovla_ros.driver.config import SO101_JOINTS

APPLICATION_ID = "nanovla_ros"
TIMELINE = "time"
TRAIL_S = 3.0  # the gripper point's trail: this many seconds of its path
PLAN_X_SCALE = 1.0  # seconds ahead -> the plan view's x


def blueprint(cameras: tuple[str, ...] = ("front", "wrist")):
    """The viewer's layout: cameras | the arm in 3D | joints over time, the planned chunk, the events."""
    import rerun.blueprint as rrb

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(*[rrb.Spatial2DView(origin=f"cameras/{c}", name=c) for c in cameras]),
            rrb.Spatial3DView(origin="robot", name="arm and plan (metres, base frame)"),
            rrb.Vertical(
                rrb.TimeSeriesView(origin="joints", name="joints: state and command (rad)"),
                rrb.Spatial2DView(origin="plan", name="planned chunk (rad vs s ahead)"),
                rrb.TextLogView(origin="events", name="events"),
                row_shares=[3, 2, 2]),
            column_shares=[2, 3, 3]),
        rrb.TimePanel(state="collapsed"), collapse_panels=True)


def route_odds(decision) -> str:
    """A route decision's predicted success rates, or that no router model made them (NaN)."""
    small, large = float(decision.predicted_success_small), float(decision.predicted_success_large)
    if np.isnan(small) or np.isnan(large):
        return "no router model: the default backbone"
    return f"P(success) small {small:.2f}, large {large:.2f}, threshold {float(decision.threshold):.2f}"


class ViewerLog:
    """Logs the robot's streams into one Rerun recording (``rerun.RecordingStream``)."""

    def __init__(self, recording, joints: tuple[str, ...] = SO101_JOINTS, urdf_path: str | None = None,
                 jpeg_quality: int = 85) -> None:
        import rerun as rr

        self.rr, self.recording, self.joints = rr, recording, tuple(joints)
        # Frames travel to the browser as JPEG (~20x smaller than raw RGB): a viewer on a busy host or over a
        # network keeps up; 0 logs raw pixels
        self.jpeg_quality = jpeg_quality
        self._trail: list[tuple[float, np.ndarray]] = []
        self._urdf = None
        self.counts: dict[str, int] = {}
        if urdf_path:
            self.describe_robot(urdf_path)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _at(self, t_s: float) -> None:
        self.rr.set_time(TIMELINE, duration=float(t_s), recording=self.recording)

    def describe_robot(self, urdf_path: str) -> None:
        """The arm's model, from its URDF file (meshes as file:// URIs or relative paths): logged once, static."""
        import rerun.urdf

        self.rr.log_file_from_path(urdf_path, entity_path_prefix="robot", static=True, recording=self.recording)
        self._urdf = rerun.urdf.UrdfTree.from_file_path(urdf_path, entity_path_prefix="robot")
        self._count("robot_description")

    def frame(self, t_s: float, camera: str, rgb: np.ndarray) -> None:
        self._at(t_s)
        if self.jpeg_quality:
            import cv2

            jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY,
                                                                                self.jpeg_quality])[1]
            image = self.rr.EncodedImage(contents=jpeg.tobytes(), media_type="image/jpeg")
        else:
            image = self.rr.Image(rgb, color_model="RGB")
        self.rr.log(f"cameras/{camera}", image, recording=self.recording)
        self._count(f"frame:{camera}")

    def joint_state(self, t_s: float, positions_rad: np.ndarray, names: tuple[str, ...] | None = None) -> None:
        from nanovla_ros.description import gripper_points

        q = self._ordered(positions_rad, names)
        self._at(t_s)
        for name, value in zip(self.joints, q, strict=True):
            self.rr.log(f"joints/state/{name}", self.rr.Scalars(float(value)), recording=self.recording)
        if self._urdf is not None:
            for name, value in zip(self.joints, q, strict=True):
                joint = self._urdf.get_joint_by_name(name)
                if joint is not None:
                    self.rr.log("robot/joint_transforms", joint.compute_transform(float(value), clamp=False),
                                recording=self.recording)
        point = gripper_points(q)[0]
        self._trail = [(t, p) for t, p in self._trail if t_s - t <= TRAIL_S] + [(t_s, point)]
        self.rr.log("robot/gripper_point", self.rr.Points3D([point], radii=0.006, colors=[(255, 200, 0)]),
                    recording=self.recording)
        self.rr.log("robot/gripper_trail", self.rr.LineStrips3D([np.array([p for _, p in self._trail])],
                                                                 colors=[(255, 200, 0)], radii=0.002),
                    recording=self.recording)
        self._count("joint_state")

    def joint_command(self, t_s: float, positions_rad: np.ndarray, names: tuple[str, ...] | None = None) -> None:
        q = self._ordered(positions_rad, names)
        self._at(t_s)
        for name, value in zip(self.joints, q, strict=True):
            self.rr.log(f"joints/command/{name}", self.rr.Scalars(float(value)), recording=self.recording)
        self._count("joint_command")

    def chunk(self, t_s: float, positions_rad: np.ndarray, dt_s: float, names: tuple[str, ...] | None = None,
              note: str = "") -> None:
        """An action chunk (H, J) radians, one row every ``dt_s`` from ``t_s``: each joint's planned future, and
        the gripper point's planned path in 3D."""
        from nanovla_ros.description import gripper_points

        chunk = np.stack([self._ordered(row, names) for row in np.asarray(positions_rad)])  # (H, J)
        ahead = np.arange(len(chunk)) * dt_s * PLAN_X_SCALE
        self._at(t_s)
        for j, name in enumerate(self.joints):
            self.rr.log(f"plan/joints/{name}", self.rr.LineStrips2D([np.stack([ahead, -chunk[:, j]], axis=1)],
                                                                      labels=[name]), recording=self.recording)
        self.rr.log("robot/plan", self.rr.LineStrips3D([gripper_points(chunk)], colors=[(0, 180, 255)], radii=0.003),
                    recording=self.recording)
        if note:
            self.event(t_s, note, "DEBUG")
        self._count("chunk")

    # The graph's messages (live from the viewer node, recorded from a bag), duck-typed: no ROS import here
    def chunk_message(self, t_s: float, msg) -> None:
        names = tuple(msg.joint_names)
        chunk = np.asarray(msg.positions, np.float64).reshape(int(msg.horizon), len(names))
        self.chunk(t_s, chunk, float(msg.dt_s), names, f"chunk {msg.chunk_id} ({msg.backbone}, "
                   f"{msg.inference_latency_ms:.0f} ms, executes {msg.execute_steps})")

    def task_message(self, t_s: float, msg) -> None:
        self.event(t_s, f"instruction: {msg.text!r} -> {msg.backbone}")

    def route_message(self, t_s: float, msg) -> None:
        self.event(t_s, f"route: {msg.backbone} ({route_odds(msg)}): {msg.reason}")

    def episode_message(self, t_s: float, msg) -> None:
        outcome = "SUCCESS" if msg.success else ("expert done" if msg.expert_done else "running")
        self.event(t_s, f"episode {msg.episode} ({msg.task_kind}, seed {msg.seed}): {outcome} after {msg.steps} "
                        f"steps", "INFO" if msg.success or not msg.steps else "WARN")

    def event(self, t_s: float, text: str, level: str = "INFO") -> None:
        self._at(t_s)
        self.rr.log("events", self.rr.TextLog(text, level=level), recording=self.recording)
        self._count("event")

    def _ordered(self, positions, names) -> np.ndarray:
        values = np.asarray(positions, np.float64)
        if names is None:
            return values
        index = {n: i for i, n in enumerate(names)}
        return np.array([values[index[n]] if n in index else np.nan for n in self.joints])
