"""Bags -> samples: alignment at the control rate, bag checks with clear reasons, resumable shards."""
from __future__ import annotations

import bag_messages as cdr
import numpy as np
import pytest

from nanovla_ros.data.demos import DatasetBuildConfig, DatasetError, build_dataset, load_demonstrations
from nanovla_ros.driver.config import SO101_JOINTS
from nanovla_ros.recording.bags import EpisodeBagWriter

TOPICS = {"/camera/image_raw": "sensor_msgs/msg/Image", "/joint_states": "sensor_msgs/msg/JointState",
          "/joint_commands": "sensor_msgs/msg/JointState", "/current_task": "nanovla_ros/msg/CurrentTask"}
T0 = 1_700_000_000 * 10**9
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)


def write_episode(path, success=True, image_gap=None, image_skew_s=0.0, with_images=True, task_at_s=0.5,
                  instruction="touch the red cube", seconds=3.0, calibration="", wrist_gap=None):
    """Commands at 30 Hz, states at 100 Hz, frames at 15 Hz (colour changes each second); stamps = receive time.
    ``wrist_gap`` (start, end) s: also wrist frames at 15 Hz (the colour of the next second), none in the gap."""
    metadata = {"instruction": instruction, "task_kind": "touch"}
    if calibration:
        metadata["calibration"] = calibration
    topics = TOPICS | ({"/wrist_camera/image_raw": "sensor_msgs/msg/Image"} if wrist_gap else {})
    w = EpisodeBagWriter(path, topics, metadata)
    events = []
    for k in range(int(seconds * 30)):
        t = T0 + int(k / 30 * 1e9)
        events.append((t, "/joint_commands", cdr.joint_state(t, SO101_JOINTS, np.full(6, 0.01 * k))))
    for k in range(int(seconds * 100)):
        t = T0 + int(k / 100 * 1e9) - 3_000_000  # states lead the commands a little
        events.append((t, "/joint_states", cdr.joint_state(t, SO101_JOINTS, np.full(6, -0.01 * k))))
    for k in range(int(seconds * 15)) if with_images else ():
        t = T0 + int(k / 15 * 1e9) - 5_000_000
        if image_gap and image_gap[0] <= k / 15 < image_gap[1]:
            continue
        rgb = np.broadcast_to(COLOURS[int(k / 15) % 3], (32, 32, 3))
        events.append((t, "/camera/image_raw", cdr.image(t + int(image_skew_s * 1e9), rgb)))
    for k in range(int(seconds * 15)) if wrist_gap else ():
        t = T0 + int(k / 15 * 1e9) - 2_000_000
        if not wrist_gap[0] <= k / 15 < wrist_gap[1]:
            rgb = np.broadcast_to(COLOURS[(int(k / 15) + 1) % 3], (32, 32, 3))
            events.append((t, "/wrist_camera/image_raw", cdr.image(t, rgb)))
    t_task = T0 + int(task_at_s * 1e9)
    events.append((t_task, "/current_task", cdr.current_task(t_task, instruction)))
    for t, topic, data in sorted(events, key=lambda e: e[0]):
        w.write(topic, t, data)
    w.close({"task_success": "true" if success else "false"})


def test_samples_align_frames_states_and_targets(tmp_path):
    write_episode(tmp_path / "bags" / "ep0")
    summary = build_dataset(tmp_path / "bags", tmp_path / "ds", progress=False)
    assert summary["built"] == 1 and not summary["skipped"]
    demos = load_demonstrations(tmp_path / "ds")
    # Samples start with the instruction (0.5 s): commands 15..89.
    assert len(demos.states) == 90 - 15 and demos.instructions == ["touch the red cube"]
    assert np.allclose(demos.actions[demos.action_index], 0.01 * np.arange(15, 90)[:, None], atol=1e-6)
    assert demos.action_end.max() == len(demos.actions) - 1
    # Sample k's state is the newest state stamped at or before command k.
    k = 15 + 10  # command at 25/30 s
    expected_state = -0.01 * np.floor((k / 30 * 1e9 + 3_000_000) / 1e7)
    assert np.allclose(demos.states[10], expected_state, atol=1e-6)
    # Its frame is the newest frame at or before it: colour of second 0 before 1 s, of second 1 after.
    colours = [demos.frames[int(demos.frame_index[i])][16, 16] for i in (0, 40)]
    assert np.abs(colours[0].astype(int) - COLOURS[0]).max() < 12  # JPEG
    assert np.abs(colours[1].astype(int) - COLOURS[1]).max() < 12


def test_bad_bags_are_skipped_with_the_reason_and_builds_resume(tmp_path):
    bags = tmp_path / "bags"
    write_episode(bags / "good")
    write_episode(bags / "no_camera", with_images=False)
    write_episode(bags / "gap", image_gap=(1.0, 1.8))
    write_episode(bags / "skew", image_skew_s=2.0)
    write_episode(bags / "failed", success=False)
    summary = build_dataset(bags, tmp_path / "ds", progress=False)
    assert summary["built"] == 1
    skipped = summary["skipped"]
    assert "missing topics ['camera/image_raw']" in skipped["no_camera"]
    assert "camera/image_raw: a gap of 0.8" in skipped["gap"]
    assert "unsynchronised" in skipped["skew"]
    assert skipped["failed"] == "task_success=false"
    again = build_dataset(bags, tmp_path / "ds", DatasetBuildConfig(include_failed=True), progress=False)
    assert again["reused"] == 1 and again["built"] == 1  # only the failed one is new
    assert len(load_demonstrations(tmp_path / "ds").instructions) == 2
    with pytest.raises(DatasetError, match="no finished rosbag2 bags"):
        build_dataset(tmp_path / "empty", tmp_path / "ds2", progress=False)


def test_stale_frames_are_dropped_and_sample_every_thins(tmp_path):
    write_episode(tmp_path / "bags" / "ep")
    build_dataset(tmp_path / "bags", tmp_path / "strict", DatasetBuildConfig(max_image_age_s=0.03), progress=False)
    strict = load_demonstrations(tmp_path / "strict")
    assert 0 < len(strict.states) < 75  # frames at 15 Hz are up to 67 ms old at a 30 Hz command
    build_dataset(tmp_path / "bags", tmp_path / "thin", DatasetBuildConfig(sample_every=3), progress=False)
    thin = load_demonstrations(tmp_path / "thin")
    assert len(thin.states) == 25 and len(thin.actions) == 75  # every command stays a target
    assert np.allclose(thin.actions[thin.action_index], 0.01 * np.arange(15, 90, 3)[:, None], atol=1e-6)


def test_lerobot_export_and_import_round_trip(tmp_path):
    """v3.0 without lerobot installed (test_lerobot_compat.py checks against lerobot itself): the layout, LeRobot's
    units, and the way back to the same radians and pictures."""
    import json

    import pyarrow.parquet as pq

    from nanovla_ros.data.lerobot_format import export_lerobot, import_lerobot
    from nanovla_ros.driver.calibration import default_calibration

    calibration = default_calibration(SO101_JOINTS)
    calibration.save(tmp_path / "cal.json")
    for i, text in enumerate(("touch the red cube", "touch the blue cube", "touch the red cube")):
        write_episode(tmp_path / "bags" / f"ep{i}", calibration=(tmp_path / "cal.json").read_text(), instruction=text)
    summary = export_lerobot(tmp_path / "bags", tmp_path / "lerobot", videos=False, progress=False)
    assert summary == {"episodes": 3, "frames": 225, "tasks": 2, "cameras": ["front"], "videos": False,
                       "skipped": {}}
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30 and info["total_frames"] == 225
    assert info["features"]["action"]["names"][0] == "shoulder_pan.pos"
    table = pq.read_table(tmp_path / "lerobot" / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    assert table["episode_index"][74:76] == [0, 1] and table["index"][75] == 75 and table["frame_index"][75] == 0
    assert table["timestamp"][30] == pytest.approx(1.0)
    # LeRobot units: degrees for the arm; the commands were 0.01 * k rad, k = 15.. (from the instruction on)
    assert table["action"][0][0] == pytest.approx(np.degrees(0.15), rel=1e-3)
    tasks = pq.read_table(tmp_path / "lerobot" / "meta" / "tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "task": ["touch the red cube", "touch the blue cube"]}
    episodes = pq.read_table(tmp_path / "lerobot" / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    first = episodes.to_pylist()[1]
    assert first["dataset_from_index"] == 75 and first["dataset_to_index"] == 150 and first["tasks"] == [
        "touch the blue cube"]
    assert len(first["stats/action/q99"]) == 6
    back = import_lerobot(tmp_path / "lerobot", tmp_path / "ds")  # the calibration travels in meta/
    assert back["episodes"] == 3
    demos = load_demonstrations(tmp_path / "ds")
    assert demos.instructions == ["touch the red cube", "touch the blue cube", "touch the red cube"]
    assert np.allclose(demos.actions[:75, 0], 0.01 * np.arange(15, 90), atol=1e-5)
    assert np.allclose(demos.states[0], -0.01 * np.floor((15 / 30 * 1e9 + 3_000_000) / 1e7), atol=1e-5)
    assert np.abs(demos.frames[0][16, 16].astype(int) - COLOURS[0]).max() < 15


def test_a_lerobot_v21_dataset_still_imports(tmp_path):
    """v2.1 (one parquet file per episode, images inside, tasks in meta/tasks.jsonl): what older LeRobot recorded."""
    import json

    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanovla_ros.data.lerobot_format import import_lerobot
    from nanovla_ros.driver.calibration import default_calibration

    calibration = default_calibration(SO101_JOINTS)
    calibration.save(tmp_path / "cal.json")
    root = tmp_path / "v21"
    (root / "meta").mkdir(parents=True)
    image = {"dtype": "image", "shape": [32, 32, 3], "names": ["height", "width", "channels"]}
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30, "features": {
        "observation.state": {"dtype": "float32", "shape": [6]}, "action": {"dtype": "float32", "shape": [6]},
        "observation.images.laptop": image}}))
    (root / "meta" / "tasks.jsonl").write_text('{"task_index": 0, "task": "a"}\n{"task_index": 1, "task": "b"}\n')
    for e in range(2):
        png = cv2.imencode(".png", np.full((32, 32, 3), COLOURS[e][::-1], np.uint8))[1].tobytes()
        path = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "observation.state": [[10.0 * e] * 5 + [50.0]] * 4, "action": [[1.0] * 5 + [50.0]] * 4,
            "observation.images.laptop": [{"bytes": png, "path": None}] * 4, "episode_index": [e] * 4,
            "frame_index": list(range(4)), "task_index": [1 - e] * 4}), path)
    back = import_lerobot(root, tmp_path / "ds", str(tmp_path / "cal.json"))
    assert back == {"episodes": 2, "cameras": {"front": "observation.images.laptop"}, "format": "v2.1"}
    demos = load_demonstrations(tmp_path / "ds")
    assert demos.instructions == ["b", "a"] and len(demos.states) == 8
    assert np.allclose(demos.states[4, 0], np.radians(10.0) * 4095 / 4096, atol=1e-4)
    assert np.abs(demos.frames[int(demos.frame_index[4])][5, 5].astype(int) - COLOURS[1]).max() <= 1


def test_a_recorded_wrist_camera_becomes_aligned_frames_and_a_stale_one_drops_samples(tmp_path):
    write_episode(tmp_path / "bags" / "ep", wrist_gap=(2.0, 2.5))  # no wrist frames for half a second
    build_dataset(tmp_path / "bags", tmp_path / "ds", progress=False)
    demos = load_demonstrations(tmp_path / "ds", cameras=("front", "wrist"))
    wrist = demos.frames_of("wrist")
    assert len(wrist) == len(demos.frames)
    for i in (0, 40):  # same moment, the other camera: the colour of the following second
        second = 0 if i == 0 else 1
        row = int(demos.frame_index[i])
        front_colour, wrist_colour = demos.frames[row][16, 16], wrist[row][16, 16]
        assert np.abs(front_colour.astype(int) - COLOURS[second]).max() < 12
        assert np.abs(wrist_colour.astype(int) - COLOURS[(second + 1) % 3]).max() < 12
    # The last wrist frame before the gap is from 1.93 s: the 10 commands from 2.2 s to 2.47 s would see it more
    # than max_image_age_s (0.25 s) old, and are dropped.
    assert len(demos.states) == 75 - 10
    assert len(load_demonstrations(tmp_path / "ds").frames) == len(demos.frames)  # front-only readers still work


def test_lerobot_units_are_bounded_to_the_calibrated_range_as_lerobot_reports_them():
    """LeRobot's MotorsBus bounds every reading to [range_min, range_max] before normalising: its SO-101 follower
    never reports a gripper outside 0-100. Inside the range the conversion is undone exactly."""
    import math

    from nanovla_ros.data.lerobot_format import from_lerobot_units, to_lerobot_units
    from nanovla_ros.driver.calibration import default_calibration

    calibration = default_calibration(SO101_JOINTS)
    low, high = np.array(calibration.limits_rad(SO101_JOINTS)).T  # (6,) each
    inside = (low + high) / 2 + 0.3 * (high - low) * np.array([[-1], [0.5], [1]])  # (3, 6)
    np.testing.assert_allclose(from_lerobot_units(to_lerobot_units(inside, calibration), calibration), inside,
                               atol=1e-5)
    beyond = to_lerobot_units(np.stack([low - 0.5, high + 0.5]), calibration)  # past both ends of every joint
    assert beyond[0, -1] == 0.0 and beyond[1, -1] == 100.0  # the gripper, 0-100
    np.testing.assert_allclose(beyond, to_lerobot_units(np.stack([low, high]), calibration), atol=1e-3)
    assert math.isclose(float(to_lerobot_units(np.zeros((1, 6)), calibration)[0, 0]), 0.0, abs_tol=1e-6)


def test_encoding_videos_leaves_the_process_scheduling_as_it_was(tmp_path):
    """SVT-AV1 raises its calling thread to real-time SCHED_FIFO where it may (as root, as in CI); a test process
    left so passed it to every node it launched afterwards, whose busy-waiting threads then starved the machine.
    The writer puts the policy back (where the encoder cannot raise it, the check holds trivially)."""
    import os

    from nanovla_ros.data.lerobot_format import _VideoFile

    before = os.sched_getscheduler(0), os.sched_getparam(0)
    video = _VideoFile(tmp_path / "v.mp4", 30, 32, 32)
    video.append([np.full((32, 32, 3), 80 * k, np.uint8) for k in range(3)])
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    video.close()
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before and video.size_mb > 0
