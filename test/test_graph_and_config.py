"""The node graph, its parameters and its entry points are one consistent set."""
import dataclasses
import importlib.util
import math
import re
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from nanovla_ros.camera.config import CameraConfig
from nanovla_ros.configuration import ConfigError
from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.graph import LAUNCH_ARGUMENTS, NODES, SHUTDOWN_ORDER, active_nodes, resolve_arguments, ros_args
from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.policy.config import PolicyNodeConfig
from nanovla_ros.recording.config import RecorderConfig
from nanovla_ros.routing.config import RouterConfig
from nanovla_ros.routing.router import BackboneRouter, RouteError
from nanovla_ros.sim.config import WorkcellNodeConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"camera": CameraConfig, "wrist_camera": CameraConfig, "instruction_encoder": EncoderConfig, "router": RouterConfig,
           "policy": PolicyNodeConfig, "so101_driver": DriverConfig, "workcell": WorkcellNodeConfig,
           "recorder": RecorderConfig}


def test_parameter_yaml_mirrors_every_config_field():
    params = yaml.safe_load((ROOT / "config" / "so101.yaml").read_text())
    assert set(params) == {f"/**/{name}" for name in CONFIGS}
    for name, cls in CONFIGS.items():
        values = params[f"/**/{name}"]["ros__parameters"]
        assert set(values) == {f.name for f in dataclasses.fields(cls)}, name
        for f in dataclasses.fields(cls):
            assert f.metadata["help"], f"{cls.__name__}.{f.name} has no description"
            if isinstance(f.default, float):
                assert isinstance(values[f.name], float), f"{name}.{f.name} must be written as a float"
        cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})  # valid as shipped


def test_entry_points_cmake_and_graph_agree():
    entries = dict(re.findall(r"^([a-z0-9_]+) *= *([a-z0-9_.]+):main$", (ROOT / "nanovla_ros" / "entry_points.txt").read_text(), re.M))
    for spec in NODES:
        assert entries[spec.executable] == spec.module
        assert importlib.util.find_spec(spec.module) is not None
    assert "nanovla" in entries
    assert "nanovla_ros/entry_points.txt" in (ROOT / "CMakeLists.txt").read_text()
    assert sorted(SHUTDOWN_ORDER) == sorted(s.name for s in NODES)


def test_ros_args_map_launch_arguments_onto_parameters():
    values = resolve_arguments({"namespace": "arm1", "camera_source": "v4l2", "camera_device": "0", "sim": "false"})
    camera = ros_args(next(s for s in NODES if s.name == "camera"), values)
    assert camera[:5] == ["--ros-args", "-r", "__node:=camera", "-r", "__ns:=/arm1"]
    assert ["-p", 'source:="v4l2"'] == camera[camera.index("-p"):camera.index("-p") + 2]
    assert 'device:="0"' in camera  # quoted: stays a string parameter
    driver = ros_args(next(s for s in NODES if s.name == "so101_driver"), values)
    assert "sim:=false" in driver
    assert values["params_file"].endswith("config/so101.yaml")
    with pytest.raises(ValueError, match="unknown launch argument"):
        resolve_arguments({"camera": "x"})


def test_workcell_mode_starts_the_workcell_and_rewires_camera_and_driver():
    values = resolve_arguments({"workcell": "true", "seed": "7", "task": "stack"})
    specs = active_nodes(values)
    assert specs[0].name == "workcell"
    assert [s.name for s in specs] == [s.name for s in NODES if s.name not in ("recorder", "wrist_camera")]
    assert active_nodes(resolve_arguments({"record": "true"}))[-1].name == "recorder"
    workcell = ros_args(specs[0], values)
    assert "seed:=7" in workcell and 'task:="stack"' in workcell  # typed: an integer and a string
    camera = ros_args(next(s for s in specs if s.name == "camera"), values)
    assert 'source:="sim"' in camera
    driver = ros_args(next(s for s in specs if s.name == "so101_driver"), values)
    assert "sim:=false" in driver and "port_wait_s:=60.0" in driver
    bus = next(a for a in workcell if a.startswith("bus_link:="))
    assert bus.replace("bus_link", "port") in driver  # the driver opens the workcell's bus
    assert not any(a.startswith("wrist_frames_name") for a in workcell)  # no wrist view unless asked for


def test_the_wrist_camera_is_a_second_camera_node_on_its_own_topics():
    values = resolve_arguments({"workcell": "true", "wrist_camera": "true"})
    specs = {s.name: s for s in active_nodes(values)}
    wrist = ros_args(specs["wrist_camera"], values)
    assert wrist[:3] == ["--ros-args", "-r", "__node:=wrist_camera"]
    assert "camera/image_raw:=wrist_camera/image_raw" in wrist and "camera/camera_info:=wrist_camera/camera_info" in wrist
    workcell = ros_args(specs["workcell"], values)
    block = next(a for a in workcell if a.startswith("wrist_frames_name:=")).split(":=")[1]
    assert f"path:={block}" in wrist and 'source:="sim"' in wrist  # it reads the block the workcell renders into
    assert f"path:={block}" not in ros_args(specs["camera"], values)
    assert "wrist_camera" not in [s.name for s in active_nodes(resolve_arguments({}))]


def test_checkpoint_shipped_names_the_packaged_one_and_the_wrist_camera_follows_the_checkpoint(tmp_path):
    from nanovla_ros.graph import SHIPPED_CHECKPOINT

    values = resolve_arguments({"workcell": "true", "checkpoint": "shipped"})
    assert values["checkpoint"] == str(SHIPPED_CHECKPOINT) and SHIPPED_CHECKPOINT.is_file()
    assert values["wrist_camera"] == "true"  # it reads front + wrist (auto, from its header)
    assert "wrist_camera" in [s.name for s in active_nodes(values)]
    asked_off = resolve_arguments({"workcell": "true", "checkpoint": "shipped", "wrist_camera": "false"})
    assert asked_off["wrist_camera"] == "false"
    assert resolve_arguments({})["wrist_camera"] == "false"  # no checkpoint: no wrist camera
    missing = resolve_arguments({"checkpoint": str(tmp_path / "none.safetensors")})
    assert missing["wrist_camera"] == "false"  # the policy node reports the missing file, not the launcher
    assert resolve_arguments({})["checkpoint"] == ""  # never a simulation-trained policy on a real arm by default


def test_the_instruction_encoder_loads_gemma_only_for_a_large_checkpoint():
    from nanovla_ros.graph import NODES, node_parameter_overrides

    encoder = next(s for s in NODES if s.name == "instruction_encoder")
    small_only = resolve_arguments({"checkpoint": "s.safetensors"})
    assert node_parameter_overrides(encoder, small_only) == {"backbones": ["small"]}
    both = resolve_arguments({"checkpoint": "s.safetensors", "checkpoint_large": "l.safetensors"})
    assert "backbones" not in node_parameter_overrides(encoder, both)  # the parameter file's: small and large
    assert "backbones" not in node_parameter_overrides(encoder, resolve_arguments({}))  # no policy: the file's


def test_router_placeholder_uses_the_default_unless_a_backbone_is_requested():
    router = BackboneRouter(RouterConfig(default_backbone="small", threshold=0.7))
    auto = router.route("touch the red cube", "auto")
    assert (auto.backbone, auto.reason, auto.threshold) == ("small", "default", 0.7)
    assert math.isnan(auto.predicted_success_small) and math.isnan(auto.predicted_success_large)
    assert router.route("touch the red cube", "LARGE").backbone == "large"
    assert router.route("touch the red cube", "").backbone == "small"
    with pytest.raises(RouteError, match="medium"):
        router.route("touch the red cube", "medium")


@pytest.mark.parametrize("cls, kwargs, quoted", [
    (RouterConfig, dict(default_backbone="medium"), "'medium'"), (RouterConfig, dict(threshold=1.5), "1.5"),
    (PolicyNodeConfig, dict(device="tpu"), "'tpu'"), (PolicyNodeConfig, dict(execute_steps=-1), "execute_steps=-1"),
    (DriverConfig, dict(max_step_rad=0.0), "0.0"), (DriverConfig, dict(joint_names=("a", "a")), "['a', 'a']"),
])
def test_configs_reject_bad_values_quoting_them(cls, kwargs, quoted):
    with pytest.raises(ConfigError, match=re.escape(quoted)):
        cls(**kwargs)


class _Recorder:
    """Stands in for a launch/launch_ros class, which cannot be installed on pip-only hosts."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_launch_file_builds_the_same_nodes_as_the_pip_launcher(monkeypatch):
    # launch and launch_ros do not exist on PyPI; these minimal stand-ins record what the launch file
    # constructs, so its use of nanovla_ros.graph is checked here (it runs for real on ROS hosts).
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _Recorder
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _Recorder
    actions.OpaqueFunction = _Recorder
    substitutions = types.ModuleType("launch.substitutions")

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    substitutions.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    launch_ros_actions = types.ModuleType("launch_ros.actions")
    launch_ros_actions.Node = _Recorder
    for name, module in {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
                         "launch_ros": launch_ros, "launch_ros.actions": launch_ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("so101_launch", ROOT / "launch" / "so101.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    description = module.generate_launch_description()
    declared = [a for a in description.args[0] if a.args and isinstance(a.args[0], str)]
    assert [a.args[0] for a in declared] == [a.name for a in LAUNCH_ARGUMENTS]
    assert all(a.kwargs["description"] for a in declared)
    opaque = description.args[0][-1]
    context = {a.name: a.default for a in LAUNCH_ARGUMENTS} | {"camera_source": "v4l2", "sim": "false"}
    nodes = opaque.kwargs["function"](context)
    state_publisher = nodes.pop()  # the arm's model and transforms on a ROS host, in place of the driver's
    assert state_publisher.kwargs["package"] == "robot_state_publisher"
    assert "<robot name=\"so101\"" in state_publisher.kwargs["parameters"][0]["robot_description"]
    assert [n.kwargs["executable"] for n in nodes] == [s.executable for s in active_nodes(context)]
    driver = next(n for n in nodes if n.kwargs["executable"] == "so101_driver_node")
    assert driver.kwargs["parameters"][1]["publish_description"] is False
    assert "workcell_node" not in [n.kwargs["executable"] for n in nodes]  # only with workcell:=true
    camera = nodes[0].kwargs
    assert camera["parameters"][0].endswith("config/so101.yaml")
    assert camera["parameters"][1]["source"] == "v4l2"
    assert nodes[-1].kwargs["parameters"][1]["sim"] is False
    respawned = {n.kwargs["name"]: n.kwargs["respawn"] for n in nodes}
    assert respawned["so101_driver"] is False and respawned["policy"] and respawned["router"] and respawned["camera"]


def test_cpu_seconds_reads_a_process_cpu_time_for_the_graphs_budget():
    """The graph evaluation's CPU budget per node: a process's CPU seconds from /proc, None for a gone one."""
    import os

    from nanovla_ros.graph_evaluation import cpu_seconds

    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 s of CPU
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.15
    assert cpu_seconds(2**22 + 12345) is None  # beyond pid_max: no such process
