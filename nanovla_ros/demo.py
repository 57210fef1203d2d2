"""`nanovla demo` (`make demo`): the README's main job on the simulated arm.

Today it launches the five-node suite with the pip launcher, sends an instruction through the
router, checks the latched task and its embedding, saves a camera frame, sends the instruction again
(a cache hit), then, because no trained checkpoint exists yet (issue #6 trains one), publishes one SCRIPTED action
chunk and checks that the driver moves the emulated SO-101 (real Feetech protocol, through
scservo_sdk) to it. Then it stops everything (the driver drops torque).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2

from nanovla_ros.camera.image_codec import ImageFields, fields_to_array
from nanovla_ros.language.encoders import ENCODER_SPECS
from nanovla_ros.launcher import LaunchError, Launcher


def run_demo(instruction: str, out_dir: str) -> int:
    import numpy as np
    from sensor_msgs.msg import Image, JointState

    from nanovla_ros.client import NanovlaClient
    from nanovla_ros.msg import ActionChunk
    from nanovla_ros.nodes.common import (ACTION_CHUNK_TOPIC, COMMAND_QOS, IMAGE_TOPIC, JOINT_STATES_TOPIC,
                                          SENSOR_QOS)

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "launch.log").open("w")
    launcher = Launcher({"sim": "true", "camera_source": "test_pattern"}, out=log_file)
    report: list[str] = []
    start = time.monotonic()
    try:
        print(f"[demo] launching the so101 suite (log: {out / 'launch.log'})", flush=True)
        launcher.start(timeout_s=120.0)
        print(f"[demo] {len(launcher.nodes)} nodes up in {time.monotonic() - start:.1f} s", flush=True)
        with NanovlaClient(node_name="nanovla_demo") as client:
            frames: list[Image] = []
            states: list[JointState] = []
            client.node.create_subscription(Image, IMAGE_TOPIC, frames.append, SENSOR_QOS)
            client.node.create_subscription(JointState, JOINT_STATES_TOPIC, states.append, SENSOR_QOS)
            chunks = client.node.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, COMMAND_QOS)
            first = client.set_instruction(instruction, "auto", timeout_s=60.0)
            if not first.accepted:
                print(f"[demo] FAILED: instruction rejected: {first.message}")
                return 1
            task = client.wait_for_task(10.0, first.instruction_id)
            again = client.set_instruction(instruction, "auto", timeout_s=30.0)
            empty = client.set_instruction("   ", "auto", timeout_s=30.0)
            client.spin_until(lambda: len(frames) > 0, 10.0)
            # SCRIPTED chunk (no trained checkpoint yet): raise the arm a little, 2 s at 30 Hz.
            arm_moved, arm_line = False, "arm              : no joint states received"
            if client.spin_until(lambda: len(states) > 0 and chunks.get_subscription_count() > 0, 10.0):
                start_pos = np.array(states[-1].position)
                target = start_pos + np.array([0.3, -0.3, 0.3, 0.2, 0.0, 0.0])
                horizon = 60
                msg = ActionChunk(chunk_id=1, instruction_id=first.instruction_id, backbone=first.backbone,
                                  dt_s=1 / 30, execute_steps=horizon, joint_names=list(states[-1].name),
                                  horizon=horizon, positions=np.tile(target, horizon).tolist())
                msg.header.stamp = client.node.get_clock().now().to_msg()
                sent = time.monotonic()
                chunks.publish(msg)
                arm_moved = client.spin_until(lambda: np.allclose(states[-1].position, target, atol=0.01), 10.0)
                error = np.abs(np.array(states[-1].position) - target).max()
                arm_line = (f"arm (scripted)   : emulated SO-101 reached a scripted chunk's target in "
                            f"{time.monotonic() - sent:.2f} s (max error {error:.4f} rad)" if arm_moved else
                            f"arm (scripted)   : did NOT reach the scripted target (max error {error:.3f} rad)")
        if task is None:
            print("[demo] FAILED: the current task was not received")
            return 1
        expected_dim = ENCODER_SPECS[task.backbone].dim
        report += [
            f"instruction      : {instruction!r} -> task {first.instruction_id}, backbone {first.backbone}",
            f"current task     : embedding of {len(task.embedding)} floats (expected {expected_dim}), "
            f"encoder {task.encoder_id}",
            f"same again       : cache_hit={again.cache_hit} (task {again.instruction_id})",
            f"empty instruction: accepted={empty.accepted}: {empty.message}",
        ]
        if frames:
            msg = frames[-1]
            rgb = fields_to_array(ImageFields(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step,
                                              bytes(msg.data)), "rgb8")
            frame_path = out / "camera_frame.png"
            cv2.imwrite(str(frame_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            report.append(f"camera           : {msg.width}x{msg.height} {msg.encoding} frame saved to {frame_path}")
        else:
            report.append("camera           : no frame received")
        report.append(arm_line)
        report.append("policy           : NanoVLA node runs, but no trained checkpoint exists yet (issue #6): "
                      "it publishes nothing and says so; the chunk above was scripted")
        ok = (len(task.embedding) == expected_dim and again.cache_hit and not empty.accepted and bool(frames)
              and arm_moved)
        report.append(f"result           : {'SUCCESS' if ok else 'FAILURE'}: instruction path and driver path end to end "
                      "(the policy does not act yet)")
        return 0 if ok else 1
    except LaunchError as error:
        print(f"[demo] FAILED to launch: {error} (see {out / 'launch.log'})")
        return 1
    finally:
        codes = launcher.stop()
        log_file.close()
        for line in report:
            print(f"[demo] {line}")
        print(f"[demo] nodes stopped: {codes}; total {time.monotonic() - start:.1f} s")
