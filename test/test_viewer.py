"""The viewer (`nanovla view`): the arm's kinematics, a recorded episode served and rendered in a real headless
browser (Debian's Chromium; skipped, saying why, where none can be installed), and the live graph logged by the
viewer node over real DDS."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import wait_until  # noqa: E402
from test_dataset import COLOURS, write_episode  # noqa: E402


def test_the_urdf_kinematics_put_the_gripper_point_where_the_simulation_does():
    import mujoco

    from nanovla_ros.description import gripper_points
    from nanovla_ros.sim.workcell import Workcell

    workcell = Workcell()
    try:
        m, d = workcell.model, workcell.data
        base = m.body("base").id
        rng = np.random.default_rng(0)
        for _ in range(5):
            q = rng.uniform(-1, 1, 6) * np.array([1.5, 1.4, 1.4, 1.4, 2.5, 0.8])
            d.qpos[:6] = q
            mujoco.mj_kinematics(m, d)
            rotation = d.xmat[base].reshape(3, 3)
            simulated = rotation.T @ (d.site_xpos[workcell.grasp_site] - d.xpos[base])
            assert np.linalg.norm(gripper_points(q)[0] - simulated) < 1e-4  # metres
    finally:
        workcell.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _colour_share(image: np.ndarray, colour) -> float:
    return float((np.abs(image.astype(int) - np.asarray(colour, int)).max(-1) < 25).mean())


def test_a_recorded_episode_renders_in_the_served_viewer(tmp_path):
    from nanovla_ros.viewer.browser import BrowserError, find_chromium, screenshot_when

    if find_chromium() is None:
        pytest.skip("no Chromium here (needs root and apt: `make browser`): the served viewer is not rendered")
    write_episode(tmp_path / "bags" / "ep0", wrist_gap=(99, 99))  # 3 s: each second the cameras change colour
    web_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen([sys.executable, "-m", "nanovla_ros.cli", "view", str(tmp_path / "bags"), "--web-port",
                                str(web_port), "--grpc-port", str(grpc_port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        while not any("open http" in line for line in lines):
            line = process.stdout.readline()
            assert line, f"nanovla view ended: {''.join(lines)[-3000:]}"
            lines.append(line)
        logged = next(line for line in lines if "{'" in line)
        assert "'frame:front': 45" in logged and "'frame:wrist': 45" in logged and "'joint_state': 300" in logged
        url = next(line for line in lines if "open http" in line).split()[2]
        # At second s of the episode the front camera shows COLOURS[s % 3] and the wrist camera the next colour. The
        # web viewer follows the stream as it arrives, which in a software rasteriser on a busy 2-core host lags the
        # episode by minutes: any one moment with both cameras in their panels (front above wrist in the left column)
        # shows that both are served, decoded and time-aligned.
        shown = {}

        def rendered(image: np.ndarray) -> bool:
            column = image[:, : image.shape[1] // 3]
            front, wrist = column[: len(column) // 2], column[len(column) // 2:]
            for s in range(3):
                shown[s] = (_colour_share(front, COLOURS[s]), _colour_share(wrist, COLOURS[(s + 1) % 3]))
            return any(min(shares) > 0.05 for shares in shown.values())
        try:
            image = screenshot_when(url, rendered, timeout_s=300, size=(1200, 700))
        except BrowserError as error:
            raise AssertionError(f"the viewer never showed both cameras at one moment: {shown}") from error
        assert image.shape[0] > 400
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_live_viewer_logs_what_the_graph_publishes(tmp_path):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from nanovla_ros.description import robot_description
    from nanovla_ros.driver.config import SO101_JOINTS
    from nanovla_ros.msg import ActionChunk, CurrentTask
    from nanovla_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
    from nanovla_ros.nodes.viewer_node import ViewerNode

    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    saved = tmp_path / "live.rrd"
    node = ViewerNode(context=context, parameter_overrides=[Parameter("save", value=str(saved)),
                                                            Parameter("max_image_rate_hz", value=0.0)])
    probe = rclpy.create_node("probe", context=context)
    executor.add_node(node)
    executor.add_node(probe)
    try:
        image_pub = probe.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        wrist_pub = probe.create_publisher(Image, "wrist_camera/image_raw", SENSOR_QOS)
        state_pub = probe.create_publisher(JointState, "joint_states", SENSOR_QOS)
        chunk_pub = probe.create_publisher(ActionChunk, "action_chunk", COMMAND_QOS)
        task_pub = probe.create_publisher(CurrentTask, "current_task", LATCHED_QOS)
        description_pub = probe.create_publisher(String, "robot_description", LATCHED_QOS)
        task_pub.publish(CurrentTask(text="touch the red cube", backbone="small"))
        description_pub.publish(String(data=robot_description()))
        frame = Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(np.full(192, 120, np.uint8)))
        chunk = ActionChunk(chunk_id=1, backbone="small", dt_s=1 / 30, execute_steps=10, horizon=4,
                            joint_names=list(SO101_JOINTS), positions=np.zeros(24).tolist())

        def logged() -> bool:
            for publisher, message in ((image_pub, frame), (wrist_pub, frame), (chunk_pub, chunk),
                                       (state_pub, JointState(name=list(SO101_JOINTS), position=[0.1] * 6))):
                publisher.publish(message)
            executor.spin_once(timeout_sec=0.05)
            c = node.log.counts
            return all(c.get(k, 0) >= 1 for k in ("frame:front", "frame:wrist", "joint_state", "chunk")) and \
                c.get("robot_description", 0) >= 2 and c.get("event", 0) >= 2
        assert wait_until(logged, 20.0, interval_s=0.0), node.log.counts
        node.log.recording.flush()
        assert saved.stat().st_size > 10_000  # the URDF's meshes, the frames, the series
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        context.try_shutdown()


def test_nanovla_view_hands_its_options_to_the_viewer_node_as_ros_parameters(tmp_path):
    """`nanovla view` (no path) starts the viewer node with its options on a ROS command line: rclpy must accept
    that line and the node must read the values back."""
    import rclpy
    from rclpy.context import Context

    from nanovla_ros.cli import viewer_ros_arguments
    from nanovla_ros.nodes.viewer_node import ViewerNode
    from nanovla_ros.viewer.config import ViewerConfig

    config = ViewerConfig(web_port=9555, grpc_port=9556, max_image_rate_hz=4.0, save=str(tmp_path / "live.rrd"))
    context = Context()
    rclpy.init(args=["nanovla_view", *viewer_ros_arguments(config)], context=context)
    try:
        node = ViewerNode(context=context)
        assert node.config == config
        node.destroy_node()
    finally:
        context.try_shutdown()
    assert viewer_ros_arguments(ViewerConfig())[-1] == 'save:=""'  # an empty string stays a string


def test_the_live_viewer_serves_from_a_rerun_server_of_its_own():
    """Live, the viewer node streams to Rerun's own server process (the web viewer and its buffers do not share the
    node's process); the page answers, and the server goes when the node does."""
    import urllib.request

    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from nanovla_ros.nodes.viewer_node import ViewerNode

    context = Context()
    rclpy.init(context=context)
    web_port, grpc_port = _free_port(), _free_port()
    try:
        node = ViewerNode(context=context, parameter_overrides=[Parameter("web_port", value=web_port),
                                                                Parameter("grpc_port", value=grpc_port)])
        server = node.log.server
        assert server is not None and server.poll() is None
        assert f"127.0.0.1:{web_port}" in node.endpoints.web_url
        def answers() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=5).status == 200
            except OSError:
                return False
        assert wait_until(answers, 30.0)
        node.destroy_node()
        assert server.poll() is not None
        import socket

        with socket.socket() as probe:  # nothing left serving: the server was the executable, not a wrapper
            assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0
    finally:
        context.try_shutdown()
