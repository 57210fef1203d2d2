"""`nanovla demo` (`make demo`): the README's main job on the simulated arm.

Today it launches the five-node suite with the pip launcher, sends an instruction through the
router, checks the latched task and its embedding, saves a camera frame, sends the instruction again
(a cache hit), and stops everything. The policy and driver are placeholders (issues #3, #4): the
report says so and nothing moves yet.
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
    from sensor_msgs.msg import Image

    from nanovla_ros.client import NanovlaClient
    from nanovla_ros.nodes.common import IMAGE_TOPIC, SENSOR_QOS

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
            client.node.create_subscription(Image, IMAGE_TOPIC, frames.append, SENSOR_QOS)
            first = client.set_instruction(instruction, "auto", timeout_s=60.0)
            if not first.accepted:
                print(f"[demo] FAILED: instruction rejected: {first.message}")
                return 1
            task = client.wait_for_task(10.0, first.instruction_id)
            again = client.set_instruction(instruction, "auto", timeout_s=30.0)
            empty = client.set_instruction("   ", "auto", timeout_s=30.0)
            client.spin_until(lambda: len(frames) > 0, 10.0)
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
        report.append("policy / arm     : PLACEHOLDERS (issues #3, #4): no action chunks yet, nothing moves")
        ok = len(task.embedding) == expected_dim and again.cache_hit and not empty.accepted and bool(frames)
        report.append(f"result           : {'SUCCESS' if ok else 'FAILURE'}: instruction path end to end "
                      "(the arm does not act yet)")
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
