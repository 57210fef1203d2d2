"""The driver, reading through the emulator over scservo_sdk, sees the simulated joints move when it
writes goals (issue #5's sim backend for the driver)."""
import threading
import time

import numpy as np
from conftest import wait_until

from nanovla_ros.driver.arm import ControlLoop, So101Arm
from nanovla_ros.driver.bus import FeetechBus
from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.driver.emulator import Sts3215BusEmulator
from nanovla_ros.driver.executor import make_chunk
from nanovla_ros.sim.servo_bridge import WorkcellServoBridge
from nanovla_ros.sim.workcell import JOINTS, Workcell


def test_driver_moves_the_simulated_arm_through_the_emulated_bus():
    workcell = Workcell()
    workcell.place({"red": (0.2, 0.0)}, {}, joints=np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.2]))
    config = DriverConfig(latency_timer_ms=4.0)
    with Sts3215BusEmulator(external_motion=True) as emulator:
        bridge = WorkcellServoBridge(workcell, emulator)
        stop = threading.Event()

        def physics() -> None:  # the process that owns the physics, at the control rate
            while not stop.wait(1 / 30):
                bridge.step()

        sim = threading.Thread(target=physics, daemon=True)
        sim.start()
        bus = FeetechBus(emulator.port_name, latency_timer_ms=4.0)
        arm = So101Arm(bus, bridge.calibration, config)
        arm.connect()
        # The driver reads the simulated pose.
        np.testing.assert_allclose(arm.read_positions(), workcell.joint_positions, atol=2e-3)
        arm.enable()  # goal = present: nothing jumps
        assert np.abs(workcell.joint_positions - [0.1, -0.2, 0.3, 0.0, 0.0, 0.2]).max() < 0.05
        loop = ControlLoop(arm, lambda t, p: None, lambda t, c: None)
        loop.start()
        target = np.array([0.4, 0.2, 0.0, 0.3, -0.3, 0.6])
        now = time.time()
        arm.submit(make_chunk(1, now, 1 / 30, 90, list(JOINTS), np.tile(target, 90), 90, JOINTS), now)
        try:
            assert wait_until(lambda: np.abs(workcell.joint_positions - target).max() < 0.05, 10.0), \
                workcell.joint_positions
            # Stop the physics before comparing: mid-step the workcell's joints run ahead of the registers the
            # bridge last wrote (CI once saw 0.058 rad on the moving gripper). Stopped, the two must agree.
            stop.set()
            sim.join(2)
            assert not sim.is_alive()
            np.testing.assert_allclose(arm.read_positions(), workcell.joint_positions, atol=2e-3)
        finally:
            loop.stop()
            stop.set()
            sim.join(2)
            arm.disable()
            bus.close()
    workcell.close()
