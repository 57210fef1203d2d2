"""The process that owns the physics (no ROS): the workcell stepped in real time at the control rate, the
STS3215 bus emulator wired to its joints (the driver opens ``bus_link`` exactly like /dev/ttyACM0), and the
chosen camera rendered into shared memory for the camera node. Time is wall-clock real time: the driver,
camera and policy keep their real-hardware timing, and no node needs use_sim_time."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numpy as np

from nanovla_ros.driver.emulator import Sts3215BusEmulator
from nanovla_ros.sim.config import WorkcellNodeConfig
from nanovla_ros.sim.frames import SharedFrameWriter
from nanovla_ros.sim.servo_bridge import WorkcellServoBridge
from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.tasks import SuccessMonitor, Task, sample_layout, sample_task
from nanovla_ros.sim.workcell import Workcell

log = logging.getLogger(__name__)


class WorkcellServer:
    """``on_leader(targets_rad, stamp_ns)`` receives the expert's joint commands (expert_teleop);
    ``on_success(task)`` is called once when the task's success check first passes."""

    def __init__(self, config: WorkcellNodeConfig,
                 on_leader: Callable[[np.ndarray, int], None] | None = None,
                 on_success: Callable[[Task], None] | None = None) -> None:
        self.config = config
        self.workcell = Workcell()
        rng = np.random.default_rng(config.seed)
        layout = sample_layout(rng)
        self.task: Task = sample_task(rng, config.task, config.split)
        self.workcell.place(layout.cubes, layout.squares)
        self.emulator = Sts3215BusEmulator(external_motion=True).start()
        self.bridge = WorkcellServoBridge(self.workcell, self.emulator)
        self.bridge.calibration.save(config.calibration_file)
        self.frames = SharedFrameWriter(config.frames_name, config.image_size, config.image_size)
        self.monitor = SuccessMonitor(self.task, self.workcell)
        self.succeeded = False
        # The expert reads the physics (IK on the live model), so it runs in the physics thread.
        self.expert = ScriptedExpert(self.workcell, self.task) if config.expert_teleop else None
        self.expert_go = threading.Event()  # the teleoperator starts when an instruction arrives
        self._on_leader, self._on_success = on_leader, on_success
        self.late_steps = 0
        self._first_frame = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workcell_physics", daemon=True)

    def _render(self) -> None:
        self.frames.write(self.workcell.render(self.config.camera, self.config.image_size), time.time_ns())

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

    def _run(self) -> None:
        # The renderer's GL context belongs to the thread that creates it: render only from this thread.
        self._render()
        self._first_frame.set()
        period = 1.0 / self.config.control_rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if self.expert is not None and self._on_leader is not None and self.expert_go.is_set():
                self._on_leader(self.expert.act(), time.time_ns())
            self.bridge.step()
            self.monitor.update()
            if not self.succeeded and self.monitor.success():
                self.succeeded = True
                if self._on_success is not None:
                    self._on_success(self.task)
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
