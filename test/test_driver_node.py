"""so101_driver_node in process (private context, real DDS) on the emulated bus."""
import time

import numpy as np
import pytest
from conftest import wait_until
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from test_nodes_inprocess import Graph

from nanovla_ros.msg import ActionChunk
from nanovla_ros.nodes.common import COMMAND_QOS, SENSOR_QOS
from nanovla_ros.nodes.so101_driver_node import So101DriverNode


@pytest.fixture
def graph():
    g = Graph(threads=1)
    yield g
    g.close()


def chunk_msg(node, chunk_id, target, horizon=40, joint_names=None, positions=None):
    names = joint_names or ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    msg = ActionChunk(chunk_id=chunk_id, dt_s=1 / 30, execute_steps=horizon, joint_names=names, horizon=horizon)
    msg.positions = positions if positions is not None else [float(target)] * (horizon * len(names))
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def test_driver_follows_chunks_rejects_bad_ones_and_reports(graph):
    states, commands, diagnostics = [], [], []
    graph.probe.create_subscription(JointState, "joint_states", states.append, SENSOR_QOS)
    graph.probe.create_subscription(JointState, "joint_commands", commands.append, COMMAND_QOS)
    graph.probe.create_subscription(DiagnosticArray, "diagnostics", diagnostics.append, COMMAND_QOS)
    publisher = graph.probe.create_publisher(ActionChunk, "action_chunk", COMMAND_QOS)
    driver = graph.add(So101DriverNode(context=graph.context, parameter_overrides=[
        Parameter("latency_timer_ms", value=2.0), Parameter("telemetry_rate_hz", value=10.0)]))
    assert wait_until(lambda: len(states) > 5 and publisher.get_subscription_count() > 0, 15.0)
    assert list(states[-1].name)[0] == "shoulder_pan"

    publisher.publish(chunk_msg(graph.probe, 1, 0.3))
    assert wait_until(lambda: np.allclose(states[-1].position, 0.3, atol=0.01), 10.0), states[-1].position
    assert commands and max(abs(c - 0.3) for c in commands[-1].position) < 1e-6

    before = list(states[-1].position)
    publisher.publish(chunk_msg(graph.probe, 2, float("nan")))
    publisher.publish(chunk_msg(graph.probe, 3, 0.0, joint_names=["a", "b"], positions=[0.0, 0.0], horizon=1))
    publisher.publish(chunk_msg(graph.probe, 4, 100.0))  # absurd: refused, not clamped to the joint limits
    future = chunk_msg(graph.probe, 5, 0.6)
    future.header.stamp.sec += 10  # stamped 10 s ahead: would otherwise run at once
    publisher.publish(future)
    assert wait_until(lambda: driver.arm.executor.rejected + driver._chunk_rejections >= 4, 5.0)
    assert wait_until(lambda: driver.arm.executor.idle_for_s(time.time()) > 0.3, 5.0)
    assert np.allclose(states[-1].position, before, atol=0.01)  # nothing moved

    assert wait_until(lambda: any(s.name.endswith(": arm") and any(v.key == "corrupt_replies" for v in s.values)
                                  for d in diagnostics for s in d.status), 5.0)

    off = graph.call(SetBool, "so101_driver/enable_torque", SetBool.Request(data=False))
    assert off.success and driver.emulator.servos[1].get("Torque_Enable") == 0
    on = graph.call(SetBool, "so101_driver/enable_torque", SetBool.Request(data=True))
    assert on.success and driver.emulator.servos[1].get("Torque_Enable") == 1
    assert graph.call(Trigger, "so101_driver/hold", Trigger.Request()).success

    emulator = driver.emulator
    driver.close()  # what Ctrl-C does
    assert driver.arm is None and driver.emulator is None
    assert all(s.get("Torque_Enable") == 0 for s in emulator.servos.values())


def test_real_port_missing_leaves_the_node_unconfigured_with_an_error(graph):
    diagnostics = []
    graph.probe.create_subscription(DiagnosticArray, "diagnostics", diagnostics.append, COMMAND_QOS)
    driver = graph.add(So101DriverNode(context=graph.context, parameter_overrides=[
        Parameter("sim", value=False), Parameter("port", value="/dev/ttyNANOVLA_missing")]))
    assert driver.arm is None
    assert wait_until(lambda: any("ttyNANOVLA_missing" in s.message for d in diagnostics for s in d.status), 5.0)


def test_lifecycle_transitions_without_autostart(graph):
    from lifecycle_msgs.msg import State

    driver = graph.add(So101DriverNode(context=graph.context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("latency_timer_ms", value=2.0)]))
    assert driver.arm is None  # nothing opened before configure
    driver.trigger_configure()
    assert driver._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE
    emulator = driver.emulator
    assert emulator.servos[1].get("Torque_Enable") == 0
    driver.trigger_activate()
    assert emulator.servos[1].get("Torque_Enable") == 1
    driver.trigger_deactivate()
    assert emulator.servos[1].get("Torque_Enable") == 0
    driver.trigger_cleanup()
    assert driver.arm is None and driver.emulator is None
