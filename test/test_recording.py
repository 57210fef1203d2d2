"""Episode bags: the MCAP writer/reader core, and the recorder node over real DDS."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import bag_messages as cdr
import numpy as np
import pytest
from conftest import wait_until
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from test_nodes_inprocess import Graph

from nanovla_ros.msg import CurrentTask
from nanovla_ros.nodes.common import LATCHED_QOS, SENSOR_QOS
from nanovla_ros.recording.bags import BagError, EpisodeBagWriter, list_bags, read_episode
from nanovla_ros.srv import StartRecording, StopRecording

TOPICS = {"/joint_states": "sensor_msgs/msg/JointState", "/current_task": "nanovla_ros/msg/CurrentTask",
          "/camera/image_raw": "sensor_msgs/msg/Image"}


def _joint_state(value: float) -> JointState:
    return JointState(name=["a", "b"], position=[value, -value])


def test_bag_round_trip_with_metadata(tmp_path):
    writer = EpisodeBagWriter(tmp_path / "ep0", TOPICS, {"instruction": "touch the red cube"})
    for i in range(5):
        writer.write("/joint_states", 1_000 + i, cdr.joint_state(1_000 + i, ["a", "b"], [0.1 * i, -0.1 * i]))
    writer.write("/current_task", 900, cdr.current_task(900, "touch the red cube", [0.5] * 4))
    writer.write("/camera/image_raw", 1_002, cdr.image(1_002, np.arange(18, dtype=np.uint8).reshape(2, 3, 3)))
    writer.close({"task_success": "true"})
    assert (tmp_path / "ep0" / "ep0_0.mcap").is_file() or list((tmp_path / "ep0").glob("*.mcap"))
    bag = read_episode(tmp_path / "ep0")
    assert bag.metadata == {"instruction": "touch the red cube", "task_success": "true"}
    assert [round(m.position[0], 3) for _, m in bag.messages["joint_states"]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert bag.messages["current_task"][0][1].embedding.tolist() == [0.5] * 4
    assert bytes(bag.messages["camera/image_raw"][0][1].data) == bytes(range(18))
    assert list(list_bags(tmp_path)) == [tmp_path / "ep0"]
    with pytest.raises(BagError, match="already exists"):
        EpisodeBagWriter(tmp_path / "ep0", TOPICS)


def test_discard_and_unwritable_path(tmp_path):
    writer = EpisodeBagWriter(tmp_path / "gone", TOPICS)
    writer.write("/joint_states", 1, cdr.joint_state(1, ["a"], [0.0]))
    writer.discard()
    assert not (tmp_path / "gone").exists()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(BagError, match="cannot create bag"):
        EpisodeBagWriter(tmp_path / "a_file" / "ep", TOPICS)
    with pytest.raises(BagError, match="not a finished rosbag2 bag"):
        read_episode(tmp_path)


def test_a_full_disk_is_a_clear_error(tmp_path):
    """The file-size limit makes the kernel refuse writes past 300 kB (EFBIG), as a full disk refuses them."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import bag_messages as cdr
        from nanovla_ros.recording.bags import BagError, EpisodeBagWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        writer = EpisodeBagWriter({str(tmp_path / 'full')!r}, {{"/img": "sensor_msgs/msg/Image"}})
        data = cdr.image(0, np.zeros((100, 1000, 3), np.uint8))
        try:
            for i in range(50):
                writer.write("/img", i, data)
            writer.close()
        except BagError as error:
            print("BAGERROR", error)
            sys.exit(3)
        sys.exit(0)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "BAGERROR" in result.stdout and "File too large" in result.stdout


@pytest.fixture
def recorder_graph(tmp_path):
    from nanovla_ros.nodes.recorder_node import RecorderNode

    graph = Graph(threads=1)
    node = graph.add(RecorderNode(context=graph.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path / "bags")),
        Parameter("topics", value=["joint_states", "current_task", "camera/image_raw"])]))
    yield graph, node
    graph.close()


def test_recorder_node_records_an_episode_over_dds(recorder_graph, tmp_path):
    graph, recorder = recorder_graph
    states = graph.probe.create_publisher(JointState, "joint_states", SENSOR_QOS)
    tasks = graph.probe.create_publisher(CurrentTask, "current_task", LATCHED_QOS)
    tasks.publish(CurrentTask(instruction_id=7, text="push the red cube to the left", backbone="small"))
    assert wait_until(lambda: "current_task" in recorder._latched, 10.0)  # latched before the episode starts
    started = graph.call(StartRecording, "recorder/start", StartRecording.Request(
        name="ep1", keys=["instruction", "seed"], values=["push the red cube to the left", "3"]))
    assert started.success, started.message
    again = graph.call(StartRecording, "recorder/start", StartRecording.Request(name="ep2"))
    assert not again.success and "already recording" in again.message
    sent = 0

    def some_written() -> bool:
        nonlocal sent
        states.publish(_joint_state(0.01 * sent))
        sent += 1
        return recorder._bag is not None and recorder._bag.messages >= 21
    assert wait_until(some_written, 10.0)
    stopped = graph.call(StopRecording, "recorder/stop", StopRecording.Request(task_success=True))
    assert stopped.success and stopped.messages >= 21, stopped.message
    bag = read_episode(tmp_path / "bags" / "ep1")
    assert bag.metadata["task_success"] == "true" and bag.metadata["seed"] == "3" and bag.metadata["robot"] == "so101"
    assert bag.messages["current_task"][0][1].text == "push the red cube to the left"
    positions = [m.position[0] for _, m in bag.messages["joint_states"]]
    assert len(positions) >= 20 and positions == sorted(positions)
    assert not graph.call(StopRecording, "recorder/stop", StopRecording.Request()).success  # nothing to stop


def test_recorder_refuses_a_bad_path_keeps_running_and_closes_on_interrupt(recorder_graph, tmp_path):
    graph, recorder = recorder_graph
    (tmp_path / "bags").mkdir()
    (tmp_path / "bags" / "blocker").write_text("a file where a folder should go")
    bad = graph.call(StartRecording, "recorder/start", StartRecording.Request(name="blocker"))
    assert not bad.success and "already exists" in bad.message
    traversal = graph.call(StartRecording, "recorder/start", StartRecording.Request(name="../escape"))
    assert not traversal.success
    assert graph.call(StartRecording, "recorder/start", StartRecording.Request(name="ep")).success
    states = graph.probe.create_publisher(JointState, "joint_states", SENSOR_QOS)
    assert wait_until(lambda: states.publish(_joint_state(0.0)) or recorder._bag.messages > 2, 10.0)
    discarded = graph.call(Trigger, "recorder/discard", Trigger.Request())
    assert discarded.success and not (tmp_path / "bags" / "ep").exists()
    assert graph.call(StartRecording, "recorder/start", StartRecording.Request(name="ep_cut")).success
    assert wait_until(lambda: states.publish(_joint_state(0.0)) or recorder._bag.messages > 2, 10.0)
    recorder.close()  # what Ctrl-C / SIGTERM runs (run_node): the open bag is finished, not lost
    bag = read_episode(tmp_path / "bags" / "ep_cut")
    assert bag.metadata["interrupted"] == "true" and bag.metadata["task_success"] == "unknown"
    assert len(bag.messages["joint_states"]) > 2


_KILLED_RECORDER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {test_dir!r})
    import bag_messages as cdr
    from nanovla_ros.recording.bags import EpisodeBagWriter
    writer = EpisodeBagWriter({path!r}, {topics!r}, {{"instruction": "touch the red cube", "seed": "7"}})
    for i in range(400):
        writer.write("/joint_states", 10**9 + i * 10**7, cdr.joint_state(i, ["a", "b"], [0.001 * i, 0.0]))
        writer.write("/camera/image_raw", 10**9 + i * 10**7, cdr.image(i, np.full((32, 32, 3), i % 256, np.uint8)))
        if i == 299:
            writer.flush()  # what the recorder does every second
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-episode: no summary, no metadata.yaml
""")


def _record_and_get_killed(path: Path) -> None:
    script = _KILLED_RECORDER.format(test_dir=str(Path(__file__).parent), path=str(path), topics=TOPICS)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr


def test_a_bag_whose_recorder_was_killed_is_repaired(tmp_path):
    from rosbags.rosbag2 import Reader

    bag_dir = tmp_path / "bags" / "ep_killed"
    _record_and_get_killed(bag_dir)
    with pytest.raises(BagError, match="nanovla bag repair"):
        read_episode(bag_dir)  # unreadable as it is
    assert list(list_bags(tmp_path / "bags")) == []
    result = subprocess.run([sys.executable, "-m", "nanovla_ros.cli", "bag", "repair", str(tmp_path / "bags")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "repaired" in result.stdout, result.stdout + result.stderr
    bag = read_episode(bag_dir)  # the project's reader...
    states = [m.position[0] for _, m in bag.messages["joint_states"]]
    assert len(states) >= 300 and states[:300] == pytest.approx([0.001 * i for i in range(300)])  # all flushed kept
    assert bag.metadata["instruction"] == "touch the red cube" and bag.metadata["repaired"] == "true"
    with Reader(bag_dir) as reader:  # ...and rosbags' own, through the summary and metadata.yaml
        assert reader.message_count == len(states) + len(bag.messages["camera/image_raw"])
    assert (bag_dir / f"{bag_dir.name}.mcap.unfinished").is_file()  # the recorder's own file is kept
    again = subprocess.run([sys.executable, "-m", "nanovla_ros.cli", "bag", "repair", str(tmp_path / "bags")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "no unfinished bag" in again.stdout


def test_the_recorder_repairs_unfinished_bags_when_it_starts(tmp_path):
    from nanovla_ros.nodes.recorder_node import RecorderNode

    _record_and_get_killed(tmp_path / "ep_killed")
    graph = Graph()
    try:
        graph.add(RecorderNode(context=graph.context, parameter_overrides=[
            Parameter("output_dir", value=str(tmp_path))]))
        assert read_episode(tmp_path / "ep_killed").metadata["interrupted"] == "true"
    finally:
        graph.close()
