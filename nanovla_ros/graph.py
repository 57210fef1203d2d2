"""The node graph of `so101`: one source of truth read by both launch/so101.launch.py (ROS hosts,
`ros2 launch`) and nanovla_ros.launcher (pip-only hosts, `nanovla launch so101`). No ROS imports.

Each node gets the parameter file, then the overrides that map launch arguments onto its
parameters. Start order is the list order; shutdown runs in ``SHUTDOWN_ORDER`` so that nothing
commands the arm while it is being stopped (policy first, then the driver, which holds and drops
torque, then the rest).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "nanovla_ros"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    name: str  # ROS node name
    executable: str  # entry point in nanovla_ros/entry_points.txt
    module: str  # python -m target on pip-only hosts
    # parameter name -> launch argument name whose value overrides it
    argument_parameters: dict[str, str] = field(default_factory=dict)


LAUNCH_ARGUMENTS = (
    LaunchArgument("namespace", "", "Namespace for every node, topic and service (e.g. arm1)."),
    LaunchArgument("params_file", "", "Parameter YAML; empty = the package's config/so101.yaml."),
    LaunchArgument("sim", "true", "true: run against the simulated arm; false: the real SO-101 on serial_port."),
    LaunchArgument("serial_port", "/dev/ttyACM0", "Serial device of the SO-101's Feetech bus (sim:=false)."),
    LaunchArgument("camera_source", "test_pattern", "Camera source: test_pattern, v4l2, video or folder."),
    LaunchArgument("camera_device", "/dev/video0", "V4L2 device for camera_source:=v4l2."),
    LaunchArgument("camera_path", "", "Video file or image folder for camera_source:=video|folder."),
    LaunchArgument("checkpoint", "", "NanoVLA-S checkpoint for the policy (empty = none: the policy stays idle)."),
    LaunchArgument("checkpoint_large", "", "NanoVLA-L checkpoint for the policy (empty = none)."),
)

NODES = (
    NodeSpec("camera", "camera_node", "nanovla_ros.nodes.camera_node",
             {"source": "camera_source", "device": "camera_device", "path": "camera_path"}),
    NodeSpec("instruction_encoder", "instruction_encoder_node", "nanovla_ros.nodes.instruction_encoder_node"),
    NodeSpec("router", "router_node", "nanovla_ros.nodes.router_node"),
    NodeSpec("policy", "policy_node", "nanovla_ros.nodes.policy_node",
             {"checkpoint_small": "checkpoint", "checkpoint_large": "checkpoint_large"}),
    NodeSpec("so101_driver", "so101_driver_node", "nanovla_ros.nodes.so101_driver_node",
             {"port": "serial_port", "sim": "sim"}),
)

SHUTDOWN_ORDER = ("policy", "so101_driver", "router", "instruction_encoder", "camera")


def share_dir() -> Path:
    """The package's share directory: the source tree on pip-only hosts, the install space on ROS hosts."""
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "config" / "so101.yaml").is_file():
        return source_root
    from ament_index_python.packages import get_package_share_directory  # ROS host fallback

    return Path(get_package_share_directory(PACKAGE))


def default_params_file() -> Path:
    return share_dir() / "config" / "so101.yaml"


def resolve_arguments(overrides: dict[str, str]) -> dict[str, str]:
    """Launch argument values: defaults updated by ``overrides``; unknown names are an error."""
    known = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; known: {sorted(known)}")
    values = {**known, **overrides}
    if not values["params_file"]:
        values["params_file"] = str(default_params_file())
    return values


def node_parameter_overrides(spec: NodeSpec, arguments: dict[str, str]) -> dict[str, str]:
    """Parameter name -> launch argument value, for the arguments mapped onto this node.

    An empty argument means "keep the parameter file's value", so only non-empty values override.
    """
    return {p: arguments[a] for p, a in spec.argument_parameters.items() if arguments.get(a, "") != ""}


def ros_args(spec: NodeSpec, arguments: dict[str, str]) -> list[str]:
    """The ``--ros-args`` a node process is started with (pip-only launcher)."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if arguments["namespace"]:
        args += ["-r", f"__ns:=/{arguments['namespace'].strip('/')}"]
    args += ["--params-file", arguments["params_file"]]
    for name, value in node_parameter_overrides(spec, arguments).items():
        # -p values are parsed as YAML: quote everything but booleans so that e.g. a camera device "0"
        # stays the string its parameter is declared as.
        literal = value.lower() if value.lower() in ("true", "false") else json.dumps(value)
        args += ["-p", f"{name}:={literal}"]
    return args
