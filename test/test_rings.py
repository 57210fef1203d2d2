"""The core rings never import ROS (STYLE.md, rule 1)."""
import subprocess
import sys

CORE_MODULES = [
    "nanovla_ros.configuration",
    "nanovla_ros.graph",
    "nanovla_ros.camera.image_codec",
    "nanovla_ros.camera.sources",
    "nanovla_ros.camera.intrinsics",
    "nanovla_ros.language.text",
    "nanovla_ros.language.cache",
    "nanovla_ros.language.encoders",
    "nanovla_ros.language.service",
    "nanovla_ros.routing.router",
    "nanovla_ros.policy.config",
    "nanovla_ros.driver.config",
    "nanovla_ros.driver.control_table",
    "nanovla_ros.driver.bus",
    "nanovla_ros.driver.emulator",
    "nanovla_ros.driver.calibration",
    "nanovla_ros.driver.calibrate",
    "nanovla_ros.driver.executor",
    "nanovla_ros.driver.arm",
    "nanovla_ros.model.configuration_nanovla",
    "nanovla_ros.model.modeling_nanovla",
    "nanovla_ros.model.checkpoint",
    "nanovla_ros.model.feature_cache",
    "nanovla_ros.policy.runner",
    "nanovla_ros.sim.workcell",
    "nanovla_ros.recording.bags",
    "nanovla_ros.recording.config",
    "nanovla_ros.data.demos",
    "nanovla_ros.data.lerobot_format",
    "nanovla_ros.training.config",
    "nanovla_ros.training.trainer",
    "nanovla_ros.training.pipeline",
    "nanovla_ros.evaluation.closed_loop",
    "nanovla_ros.sim.tasks",
    "nanovla_ros.sim.experts",
    "nanovla_ros.sim.servo_bridge",
]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_core_modules_do_not_load_rclpy_or_messages():
    loaded = _loaded_after_import(CORE_MODULES)
    ros = sorted(m for m in loaded if m.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs", "rcl_interfaces")
                 or m.startswith("nanovla_ros.msg") or m.startswith("nanovla_ros.srv"))
    assert ros == [], f"core modules pulled in ROS modules: {ros}"


def test_node_modules_do_load_rclpy():
    # The check above can fail: importing a node module loads rclpy.
    assert "rclpy" in _loaded_after_import(["nanovla_ros.nodes.router_node"])
