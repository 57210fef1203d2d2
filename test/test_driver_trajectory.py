"""trajectory_msgs/JointTrajectory to the driver: the chunk it becomes (core) and the node following it on the
emulated bus over real DDS, an unsafe one refused with nothing moving."""
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from conftest import wait_until
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from test_nodes_inprocess import Graph
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from nanovla_ros.driver.executor import ChunkRejected
from nanovla_ros.driver.trajectory import trajectory_chunk
from nanovla_ros.nodes.common import COMMAND_QOS, JOINT_TRAJECTORY_TOPIC, SENSOR_QOS
from nanovla_ros.nodes.so101_driver_node import So101DriverNode

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
DT = 1 / 30


def chunk(times, points, names=JOINTS, start=None, **kwargs):
    return trajectory_chunk(7, 100.0, names, times, points, np.zeros(6) if start is None else start, DT, 0.05,
                            JOINTS, **kwargs)


def test_a_trajectory_becomes_targets_every_control_period_from_where_the_arm_is():
    c = chunk([1.0, 2.0], [[0.3, 0, 0, 0, 0, 0], [0.3, -0.3, 0, 0, 0, 0]])
    assert c.positions.shape == (61, 6) and c.execute_steps == 61 and c.stamp_s == 100.0
    assert np.allclose(c.positions[0], 0.0) and np.allclose(c.positions[15, 0], 0.15)  # halfway to the first point
    assert np.allclose(c.positions[30], [0.3, 0, 0, 0, 0, 0]) and np.allclose(c.positions[-1], [0.3, -0.3, 0, 0, 0, 0])
    shuffled = chunk([1.0], [[0, 0, 0, 0, 0.2, 0]], names=list(reversed(JOINTS)))  # any joint order
    assert np.allclose(shuffled.positions[-1], [0, 0.2, 0, 0, 0, 0])
    here = chunk([0.0, 0.5], [[0.01, 0, 0, 0, 0, 0], [0.2, 0, 0, 0, 0, 0]])  # a first point at 0 where the arm is
    assert np.allclose(here.positions[0, 0], 0.01) and np.allclose(here.positions[-1, 0], 0.2)


@pytest.mark.parametrize("times, points, kwargs, match", [
    ([0.1], [[1.0, 0, 0, 0, 0, 0]], {}, "rad/s"),  # 10 rad/s: faster than 0.05 rad a 33 ms tick
    ([1.0, 1.0], [[0.1] * 6, [0.2] * 6], {}, "strictly increasing"),
    ([2.0, 1.0], [[0.1] * 6, [0.2] * 6], {}, "strictly increasing"),
    ([1.0], [[float("nan")] * 6], {}, "NaN"),
    ([1.0], [[0.1] * 5], {}, "6 positions"),
    ([0.0], [[0.5] * 6], {}, "time 0"),
    ([40.0], [[0.1] * 6], {}, "max_trajectory_s"),
    ([], [], {}, "no points"),
])
def test_unsafe_or_malformed_trajectories_are_refused_saying_why(times, points, kwargs, match):
    with pytest.raises(ChunkRejected, match=match):
        chunk(times, points, **kwargs)


def trajectory_msg(times, points, names=JOINTS):
    msg = JointTrajectory(joint_names=list(names))  # a zero stamp: start on arrival
    for t, p in zip(times, points, strict=True):
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in p],
                                               time_from_start=Duration(sec=int(t), nanosec=int(t % 1 * 1e9))))
    return msg


def test_the_driver_follows_a_joint_trajectory_and_refuses_an_unsafe_one():
    graph = Graph(threads=1)
    try:
        states = []
        graph.probe.create_subscription(JointState, "joint_states", states.append, SENSOR_QOS)
        publisher = graph.probe.create_publisher(JointTrajectory, JOINT_TRAJECTORY_TOPIC, COMMAND_QOS)
        driver = graph.add(So101DriverNode(context=graph.context, parameter_overrides=[
            Parameter("latency_timer_ms", value=2.0)]))
        assert wait_until(lambda: len(states) > 5 and publisher.get_subscription_count() > 0, 15.0)
        start = np.array(states[-1].position)
        publisher.publish(trajectory_msg([0.5, 1.0], [start + [0.2, 0, 0, 0, 0, 0], start + [0.2, -0.2, 0, 0, 0, 0]]))
        goal = start + [0.2, -0.2, 0, 0, 0, 0]
        assert wait_until(lambda: np.allclose(states[-1].position, goal, atol=0.01), 10.0), states[-1].position
        before = np.array(states[-1].position)
        publisher.publish(trajectory_msg([0.1], [before + [1.0, 0, 0, 0, 0, 0]]))  # 10 rad/s: refused
        publisher.publish(trajectory_msg([1.0], [before + [100.0, 0, 0, 0, 0, 0]]))  # past the joint's range
        assert wait_until(lambda: driver._chunk_rejections + driver.arm.executor.rejected >= 2, 5.0)
        assert wait_until(lambda: driver.arm.executor.idle_for_s(time.time()) > 0.3, 5.0)
        assert np.allclose(states[-1].position, before, atol=0.01)  # nothing moved
    finally:
        graph.close()


def test_the_driver_publishes_the_arm_s_model_latched_for_viewers():
    import xml.etree.ElementTree as ET
    from pathlib import Path
    from urllib.parse import urlparse

    from std_msgs.msg import String

    from nanovla_ros.nodes.common import LATCHED_QOS, ROBOT_DESCRIPTION_TOPIC

    graph = Graph(threads=1)
    try:
        graph.add(So101DriverNode(context=graph.context, parameter_overrides=[Parameter("latency_timer_ms", value=2.0)]))
        received = []  # subscribed after the driver published: latched, it still comes
        graph.probe.create_subscription(String, ROBOT_DESCRIPTION_TOPIC, received.append, LATCHED_QOS)
        assert wait_until(lambda: received, 10.0)
        root = ET.fromstring(received[0].data)
        joints = {j.get("name") for j in root.findall("joint") if j.get("type") == "revolute"}
        assert joints == set(JOINTS)  # the names joint_states carries: robot_state_publisher poses it from them
        meshes = [urlparse(m.get("filename")) for m in root.iter("mesh")]
        assert meshes and all(m.scheme == "file" and Path(m.path).is_file() for m in meshes)
    finally:
        graph.close()
