"""The process that owns the physics (no ROS): the workcell stepped in real time at the control rate, the
STS3215 bus emulator wired to its joints (the driver opens ``bus_link`` exactly like /dev/ttyACM0), and the
chosen camera rendered into shared memory for the camera node. Time is wall-clock real time: the driver,
camera and policy keep their real-hardware timing, and no node needs use_sim_time."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nanovla_ros.driver.emulator import Sts3215BusEmulator
from nanovla_ros.sim.config import WorkcellNodeConfig
from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.perturbation import Perturbation
from nanovla_ros.sim.perturbation import apply as apply_perturbation
from nanovla_ros.sim.perturbation import parse as parse_perturbation
from nanovla_ros.sim.servo_bridge import WorkcellServoBridge
from nanovla_ros.sim.tasks import SuccessMonitor, Task, sample_layout, sample_task
from nanovla_ros.sim.workcell import Workcell
from nanovla_ros.transport.shared_frames import SharedFrameWriter

log = logging.getLogger(__name__)


HOME_RAD = np.zeros(6)
HOMING_STEP_RAD = 0.05  # per control step while the leader returns home between episodes (1.5 rad/s)
HOMING_TOLERANCE_RAD = 0.03
HOMING_TIMEOUT_STEPS = 150


@dataclass(frozen=True)
class EpisodeState:
    episode: int
    seed: int
    task: Task
    success: bool
    expert_done: bool
    steps: int


class WorkcellServer:
    """``on_leader(targets_rad, stamp_ns)`` receives the expert's joint commands (expert_teleop);
    ``on_success(task)`` is called once when the task's success check first passes; ``on_episode(state)``
    at every change of the episode (reset, success, expert done).

    ``reset(seed, kind, split)`` starts a new episode: with the expert teleoperating, the leader first
    brings the arm home through the driver (as a person would; teleporting the arm would fight the
    driver's last command), then the cubes and squares are laid out anew."""

    def __init__(self, config: WorkcellNodeConfig,
                 on_leader: Callable[[np.ndarray, int], None] | None = None,
                 on_success: Callable[[Task], None] | None = None,
                 on_episode: Callable[[EpisodeState], None] | None = None) -> None:
        self.config = config
        self.workcell = Workcell()
        rng = np.random.default_rng(config.seed)
        layout = sample_layout(rng)
        self.task: Task = sample_task(rng, config.task, config.split)
        self._undo_look: Callable[[], None] = lambda: None
        self.look = self._set_look(config.seed)
        self.workcell.place(layout.cubes, layout.squares)
        self.episode, self.seed = 1, config.seed
        self._on_episode = on_episode
        self._pending: tuple | None = None  # (seed, layout, task, done event) waiting for the physics thread
        self._homing_steps = 0
        self._leader = HOME_RAD.copy()
        self._lock = threading.Lock()
        self.emulator = Sts3215BusEmulator(external_motion=True).start()
        self.bridge = WorkcellServoBridge(self.workcell, self.emulator)
        self.bridge.calibration.save(config.calibration_file)
        self.frames = SharedFrameWriter(config.frames_name, config.image_size, config.image_size)
        self.wrist_frames = (SharedFrameWriter(config.wrist_frames_name, config.image_size, config.image_size)
                             if config.wrist_frames_name else None)
        self.monitor = SuccessMonitor(self.task, self.workcell)
        self.succeeded = False
        # The expert reads the physics (IK on the live model), so it runs in the physics thread.
        self.expert = ScriptedExpert(self.workcell, self.task) if config.expert_teleop else None
        self.expert_go = threading.Event()  # the teleoperator starts when an instruction arrives
        self._expert_done = False
        self._on_leader, self._on_success = on_leader, on_success
        self.late_steps = 0
        self._first_frame = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workcell_physics", daemon=True)

    def _set_look(self, seed: int) -> Perturbation:
        """How the episode of ``seed`` looks (``config.look``); the previous episode's look is undone first."""
        self._undo_look()
        look = parse_perturbation(self.config.look, seed)  # "random": drawn for this episode
        self._undo_look = apply_perturbation(self.workcell, look, np.random.default_rng([seed, 17]))
        return look

    def _render(self) -> None:
        stamp_ns = time.time_ns()  # both views show the same physics state: one stamp
        if self.wrist_frames is not None:
            self.wrist_frames.write(self.workcell.render("wrist", self.config.image_size), stamp_ns)
        self.frames.write(self.workcell.render(self.config.camera, self.config.image_size), stamp_ns)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the physics thread; publish the bus (its symlink) only once the first frame is rendered:
        creating the GL context stalls this process for about a second, and a driver talking to the bus
        meanwhile would see its servos fall silent."""
        self._thread.start()
        if not self._first_frame.wait(timeout_s):
            raise RuntimeError(f"the workcell rendered no frame within {timeout_s:g} s")
        if os.path.lexists(self.config.bus_link):
            os.unlink(self.config.bus_link)
        os.symlink(self.emulator.port_name, self.config.bus_link)

    def state(self) -> EpisodeState:
        return EpisodeState(self.episode, self.seed, self.task, self.succeeded, self._expert_done, self.workcell.steps)

    def reset(self, seed: int, kind: str = "", split: str = "", timeout_s: float = 15.0) -> EpisodeState:
        """Lay out a new episode (blocks until the physics thread has done it); raises ValueError for a bad
        kind or split, TimeoutError when the arm does not get home."""
        rng = np.random.default_rng(seed)
        layout = sample_layout(rng)
        task = sample_task(rng, kind or self.config.task, split or self.config.split)
        done = threading.Event()
        with self._lock:
            self._pending = (seed, layout, task, done)
            self._homing_steps = 0
        self.expert_go.clear()
        if not done.wait(timeout_s):
            raise TimeoutError(f"the workcell did not finish the reset within {timeout_s:g} s")
        return self.state()

    def _apply_reset(self) -> None:
        """Physics thread: bring the leader home (teleop), then lay out the new episode."""
        with self._lock:
            pending = self._pending
        if pending is None:
            return
        seed, layout, task, done = pending
        if self.config.expert_teleop and self._on_leader is not None:
            self._homing_steps += 1
            delta = HOME_RAD - self._leader
            self._leader = self._leader + np.clip(delta, -HOMING_STEP_RAD, HOMING_STEP_RAD)
            self._on_leader(self._leader.copy(), time.time_ns())
            home = np.max(np.abs(self.workcell.joint_positions - HOME_RAD)) < HOMING_TOLERANCE_RAD
            if not home and self._homing_steps < HOMING_TIMEOUT_STEPS:
                return
        self.look = self._set_look(seed)
        self.workcell.place(layout.cubes, layout.squares, joints=self.workcell.joint_positions)
        self.task, self.seed, self.episode = task, seed, self.episode + 1
        self.monitor = SuccessMonitor(task, self.workcell)
        self.succeeded, self._expert_done = False, False
        if self.config.expert_teleop:
            self.expert = ScriptedExpert(self.workcell, task)
        with self._lock:
            self._pending = None
        done.set()
        self._publish_state()

    def _publish_state(self) -> None:
        if self._on_episode is not None:
            self._on_episode(self.state())

    def _run(self) -> None:
        # The renderer's GL context belongs to the thread that creates it: render only from this thread.
        self._render()
        self._first_frame.set()
        self._publish_state()
        period = 1.0 / self.config.control_rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if self._pending is not None:
                self._apply_reset()
            elif self.expert is not None and self._on_leader is not None and self.expert_go.is_set():
                self._leader = self.expert.act()
                self._on_leader(self._leader, time.time_ns())
                if self.expert.done and not self._expert_done:
                    self._expert_done = True
                    self._publish_state()
            self.bridge.step()
            self.monitor.update()
            if not self.succeeded and self.monitor.success():
                self.succeeded = True
                if self._on_success is not None:
                    self._on_success(self.task)
                self._publish_state()
            self._render()
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < 0:
                self.late_steps += 1
                next_tick = time.monotonic()
            elif self._stop.wait(delay):
                break
        self.workcell.close()  # the GL context goes with the thread that made it (closing it elsewhere crashes)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.emulator.stop()
        if os.path.islink(self.config.bus_link):
            os.unlink(self.config.bus_link)
        self.frames.close()
        if self.wrist_frames is not None:
            self.wrist_frames.close()
