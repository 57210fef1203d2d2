"""so101_driver_node: the SO-101 arm on Feetech STS3215 servos, as a lifecycle node.

configure  opens the bus (sim: an STS3215 bus emulator on a pseudo-terminal, through the same SDK),
           loads the calibration, checks every servo answers, starts the state loop
activate   goal = present position (no jump), torque on, chunks executed (leader_mode: torque stays off)
deactivate holds, torque off
cleanup    stops the loop, closes the port

Publishes joint_states (state_rate_hz), joint_commands (the command actually sent, after clamping) and
diagnostics (telemetry_rate_hz); subscribes action_chunk; services enable_torque (SetBool), hold and
reset_faults (Trigger). With autostart (default) it configures and activates itself.

Ending: Ctrl-C or SIGTERM is an explicit stop: chunks stop, the arm holds, then torque goes off (unless
torque_off_on_stop is false), as LeRobot's followers do on disconnect. SIGHUP, which the launcher's death
sends, is not a stop but a lost supervisor: the driver stops writing and exits with torque on, and the
STS3215s keep holding their last goal by themselves. When other nodes die (policy, router, encoder, camera)
the driver goes on: with no new chunk it finishes the current one and holds the last target, torque on, and
says so in diagnostics ("holding").
"""
from __future__ import annotations

import itertools
import os
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from nanovla_ros.description import robot_description
from nanovla_ros.driver.arm import ArmMode, ControlLoop, So101Arm
from nanovla_ros.driver.bus import BusError, FeetechBus
from nanovla_ros.driver.calibration import ArmCalibration, CalibrationError, default_calibration
from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.driver.emulator import FaultConfig, Sts3215BusEmulator
from nanovla_ros.driver.executor import ChunkRejected, Command, make_chunk
from nanovla_ros.driver.trajectory import trajectory_chunk
from nanovla_ros.msg import ActionChunk
from nanovla_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    COMMAND_QOS,
    DIAGNOSTICS_TOPIC,
    JOINT_COMMANDS_TOPIC,
    JOINT_STATES_TOPIC,
    JOINT_TRAJECTORY_TOPIC,
    LATCHED_QOS,
    ROBOT_DESCRIPTION_TOPIC,
    SENSOR_QOS,
    ns_from_stamp,
    reply_patiently,
    run_node,
    stamp_from_ns,
)
from nanovla_ros.nodes.params import declare_config

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class So101DriverNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("so101_driver", **kwargs)
        self.config = declare_config(self, DriverConfig)
        self.emulator: Sts3215BusEmulator | None = None
        self.bus: FeetechBus | None = None
        self.arm: So101Arm | None = None
        self.loop: ControlLoop | None = None
        self._problem = "not configured"
        self._chunk_rejections = 0
        self._state_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, SENSOR_QOS)
        self._command_pub = self.create_publisher(JointState, JOINT_COMMANDS_TOPIC, COMMAND_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, COMMAND_QOS)
        self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self._on_chunk, COMMAND_QOS)
        self.create_subscription(JointTrajectory, JOINT_TRAJECTORY_TOPIC, self._on_trajectory, COMMAND_QOS)
        if self.config.publish_description:  # what viewers draw the arm from, with joint_states
            self._description_pub = self.create_publisher(String, ROBOT_DESCRIPTION_TOPIC, LATCHED_QOS)
            self._description_pub.publish(String(data=robot_description()))
        self._trajectory_ids = itertools.count(2_000_000)
        if self.config.follow_topic:
            self.create_subscription(JointState, self.config.follow_topic, self._on_leader, COMMAND_QOS)
            self._leader_ids = itertools.count(1_000_000)
        reply_patiently(self, self.create_service(SetBool, "~/enable_torque", self._on_enable_torque))
        reply_patiently(self, self.create_service(Trigger, "~/hold", self._on_hold))
        reply_patiently(self, self.create_service(Trigger, "~/reset_faults", self._on_reset_faults))
        self.create_timer(1.0 / self.config.telemetry_rate_hz, self._on_diagnostics_timer)
        if self.config.autostart:
            if self.trigger_configure() == SUCCESS and not self.config.leader_mode:
                self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        c = self.config
        try:
            port = c.port
            if c.sim:
                self.emulator = Sts3215BusEmulator(faults=FaultConfig(c.sim_corrupt_rate, c.sim_drop_rate)).start()
                port = self.emulator.port_name
            if not c.sim and c.port_wait_s > 0:
                self._wait_for_port(port, c.port_wait_s)
            if c.calibration_file:
                calibration = ArmCalibration.load(c.calibration_file, c.joint_names)
            elif c.sim:
                calibration = default_calibration(c.joint_names)
                self.get_logger().info("sim: using the emulated arm's built-in calibration")
            else:
                calibration = None
                self.get_logger().warning("no calibration_file: joint states only, torque will be refused; "
                                          "run `nanovla calibrate --port <port> --out <file>`")
            self.bus = FeetechBus(port, c.baudrate, c.bus_retries, c.latency_timer_ms)
            self.arm = So101Arm(self.bus, calibration, c)
            self.arm.connect()
            if c.leader_mode:
                self.arm.disable()
        except Exception as error:  # a transition that raises ends in rclpy's ErrorProcessing without a word
            detail = error if isinstance(error, (BusError, CalibrationError)) else f"{type(error).__name__}: {error}"
            self._problem = f"configure failed: {detail}"
            self.get_logger().error(self._problem)
            self._release()
            return FAILURE
        self.loop = ControlLoop(self.arm, self._publish_state, self._publish_command)
        self.loop.start()
        self._problem = ""
        self.get_logger().info(f"bus open on {port} ({'emulated STS3215 servos' if c.sim else 'serial'}); "
                               f"state {c.state_rate_hz:g} Hz, control {c.control_rate_hz:g} Hz"
                               + ("; leader arm mode" if c.leader_mode else ""))
        return SUCCESS

    def _wait_for_port(self, port: str, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        if not os.path.exists(port):
            self.get_logger().info(f"waiting up to {wait_s:g} s for {port} to appear")
        while not os.path.exists(port) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling a device node with a deadline; configure reports if it never comes

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.config.leader_mode:
            self.get_logger().error("leader_mode: torque stays off; this arm is not activated")
            return FAILURE
        try:
            self.arm.enable()
        except (BusError, CalibrationError) as error:
            self._problem = f"activate failed: {error}"
            self.get_logger().error(self._problem)
            return FAILURE
        self.get_logger().info("torque on; executing action chunks")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.arm.hold()
        self.arm.disable()
        self.get_logger().info("holding; torque off")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return SUCCESS

    def _release(self) -> None:
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        self.arm = None

    def close(self) -> None:
        """Ctrl-C / SIGTERM, an explicit stop: hold, then torque off (torque_off_on_stop), then release the bus."""
        if self.arm is not None:
            if self.loop is not None:
                self.loop.stop()
                self.loop = None
            self.arm.hold()
            if self.config.torque_off_on_stop:
                self.arm.disable()
                self.get_logger().info("torque off (shutdown)")
            else:
                self.get_logger().info("stopped; torque stays on (torque_off_on_stop=false): the servos hold")
        self._release()

    def abandon(self) -> None:
        """SIGHUP, the launcher gone: not a stop. Stop writing, keep torque on (the servos hold the last goal)."""
        if self.arm is not None and self.loop is not None:
            self.loop.stop()
            self.loop = None
            self.get_logger().warning("supervisor gone (SIGHUP): exiting with torque on; the servos hold their "
                                      "last goal. Restart the launch to take over, or power the arm down")
        self._release()

    # ------------------------------------------------------------------ data
    def _joint_state(self, wall_s: float, positions: np.ndarray) -> JointState:
        msg = JointState(name=list(self.config.joint_names), position=[float(p) for p in positions])
        msg.header.stamp = stamp_from_ns(int(wall_s * 1e9))
        return msg

    def _publish_state(self, wall_s: float, positions: np.ndarray) -> None:
        self._state_pub.publish(self._joint_state(wall_s, positions))

    def _publish_command(self, wall_s: float, command: Command) -> None:
        self._command_pub.publish(self._joint_state(wall_s, command.positions))

    def _on_chunk(self, msg: ActionChunk) -> None:
        arm = self.arm
        try:
            if arm is None:
                raise ChunkRejected("the arm is not configured")
            chunk = make_chunk(msg.chunk_id, ns_from_stamp(msg.header.stamp) / 1e9, msg.dt_s, msg.execute_steps,
                               list(msg.joint_names), msg.positions, msg.horizon, self.config.joint_names)
            arm.submit(chunk, time.time())
        except ChunkRejected as error:
            self._chunk_rejections += 1
            self.get_logger().warning(f"action chunk {msg.chunk_id} rejected, nothing moves: {error}",
                                      throttle_duration_sec=1.0)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """A standard trajectory (MoveIt, a script): followed from where the arm is commanded now, through the same
        checks as chunks, plus speed and duration (nanovla_ros.driver.trajectory)."""
        arm = self.arm
        chunk_id = next(self._trajectory_ids)
        try:
            if arm is None:
                raise ChunkRejected("the arm is not configured")
            stamp_ns = ns_from_stamp(msg.header.stamp)
            now_s = time.time()
            chunk = trajectory_chunk(
                chunk_id, stamp_ns / 1e9 if stamp_ns else now_s, list(msg.joint_names),
                [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points],
                [list(p.positions) for p in msg.points], arm.commanded_rad(),
                1.0 / self.config.control_rate_hz, self.config.max_step_rad, self.config.joint_names,
                self.config.max_trajectory_s)
            arm.submit(chunk, now_s)
            self.get_logger().info(f"joint trajectory accepted: {len(msg.points)} points over "
                                   f"{chunk.positions.shape[0] / self.config.control_rate_hz:.1f} s")
        except ChunkRejected as error:
            self._chunk_rejections += 1
            self.get_logger().warning(f"joint trajectory rejected, nothing moves: {error}", throttle_duration_sec=1.0)

    def _on_leader(self, msg: JointState) -> None:
        """Teleoperation: each leader reading becomes a one-step chunk, through the same safety path."""
        arm = self.arm
        if arm is None:
            return
        try:
            chunk = make_chunk(next(self._leader_ids), ns_from_stamp(msg.header.stamp) / 1e9,
                               1.0 / self.config.control_rate_hz, 1, list(msg.name), list(msg.position), 1,
                               self.config.joint_names)
            arm.submit(chunk, time.time())
        except ChunkRejected as error:
            self.get_logger().warning(f"leader command rejected, nothing moves: {error}", throttle_duration_sec=1.0)

    # ------------------------------------------------------------------ services
    def _on_enable_torque(self, request: SetBool.Request, response: SetBool.Response):
        if self.arm is None:
            response.success, response.message = False, f"arm not configured ({self._problem})"
            return response
        try:
            self.arm.enable() if request.data else self.arm.disable()
            response.success, response.message = True, "torque on" if request.data else "torque off"
        except (BusError, CalibrationError) as error:
            response.success, response.message = False, str(error)
        return response

    def _on_hold(self, request: Trigger.Request, response: Trigger.Response):
        if self.arm is None:
            response.success, response.message = False, "arm not configured"
        else:
            self.arm.hold()
            response.success, response.message = True, "holding the present position"
        return response

    def _on_reset_faults(self, request: Trigger.Request, response: Trigger.Response):
        if self.arm is None:
            response.success, response.message = False, "arm not configured"
            return response
        try:
            self.arm.reset_faults()
            response.success, response.message = True, "faults cleared; torque is off: call enable_torque"
        except BusError as error:
            response.success, response.message = False, str(error)
        return response

    # ------------------------------------------------------------------ diagnostics
    def _on_diagnostics_timer(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        name = self.get_name()
        arm = self.arm
        if arm is None:
            array.status.append(DiagnosticStatus(level=DiagnosticStatus.ERROR, name=f"{name}: arm",
                                                 hardware_id="so101", message=self._problem or "not configured"))
            self._diag_pub.publish(array)
            return
        health, stats = arm.health, arm.bus.stats
        level = {ArmMode.FAULT: DiagnosticStatus.ERROR}.get(health.mode, DiagnosticStatus.OK)
        idle_s = arm.executor.idle_for_s(time.time())
        message = health.fault or health.mode.value
        if health.mode is ArmMode.ACTIVE and idle_s > 1.0:  # a policy that stopped or died: the arm holds
            message = ("holding the last target, torque on: no action chunk yet" if idle_s == float("inf")
                       else f"holding the last target, torque on: no action chunk for {idle_s:.1f} s")
        loop = self.loop.stats if self.loop is not None else None
        periods = np.asarray(loop.periods_s[-200:]) * 1e3 if loop and loop.periods_s else np.zeros(1)
        values = {
            "mode": health.mode.value, "fault": health.fault,
            "transactions": stats.transactions, "retries": stats.retries, "read_failures": stats.read_failures,
            "corrupt_replies": stats.corrupt, "timeouts": stats.timeouts,
            "stale_replies": stats.stale_replies, "unexpected_replies": stats.unexpected_replies,
            "implausible_readings": health.implausible_readings, "unconfirmed_status": health.unconfirmed_status,
            "chunks_accepted": arm.executor.accepted, "chunks_rejected": arm.executor.rejected + self._chunk_rejections,
            "loop_cycles": loop.cycles if loop else 0, "missed_control_ticks": loop.missed_control_ticks if loop else 0,
            "period_p99_ms": f"{np.percentile(periods, 99):.2f}",
            "holding_for_s": "0" if idle_s == 0 else ("inf" if idle_s == float("inf") else f"{idle_s:.1f}"),
        }
        latency = np.asarray(arm.executor.first_action_latency_s) * 1e3
        if latency.size:  # camera stamp -> first action of a chunk written to the servos
            values["chunk_latency_p50_ms"] = f"{np.percentile(latency, 50):.1f}"
            values["chunk_latency_p95_ms"] = f"{np.percentile(latency, 95):.1f}"
            values["chunk_latency_count"] = latency.size
        array.status.append(DiagnosticStatus(
            level=level, name=f"{name}: arm", hardware_id="so101",
            message=message, values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))
        for joint in arm.joints:
            t = health.telemetry[joint]
            silent = joint in health.silent_since_s
            bad = t.status_bits & 0x2D or t.torque_off_by_fault or silent
            array.status.append(DiagnosticStatus(
                level=DiagnosticStatus.ERROR if bad else DiagnosticStatus.OK,
                name=f"{name}: {joint}", hardware_id=f"sts3215 id {arm.ids[joint]}",
                message="not answering" if silent else ("torque off by fault" if t.torque_off_by_fault else "ok"),
                values=[KeyValue(key="torque", value={True: "on", False: "off"}.get(t.torque_enabled, "unknown")),
                        KeyValue(key="temperature_c", value=str(t.temperature_c)),
                        KeyValue(key="load", value=str(t.load)),
                        KeyValue(key="voltage_v", value=f"{t.voltage_v:.1f}"),
                        KeyValue(key="status_bits", value=hex(t.status_bits)),
                        KeyValue(key="read_failures", value=str(stats.per_servo_failures.get(arm.ids[joint], 0)))]))
        self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    return run_node(So101DriverNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
