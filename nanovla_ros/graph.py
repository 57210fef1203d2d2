"""The node graph of `so101`: one source of truth read by both launch/so101.launch.py (ROS hosts,
`ros2 launch`) and nanovla_ros.launcher (pip-only hosts, `nanovla launch so101`). No ROS imports.

Each node gets the parameter file, then the overrides that map launch arguments onto its
parameters. Start order is the list order; shutdown runs in ``SHUTDOWN_ORDER`` so that nothing
commands the arm while it is being stopped (policy first, then the driver, which holds and drops
torque, then the rest).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "nanovla_ros"
# The NanoVLA-S checkpoint trained in the simulated workcell that ships with the package (`checkpoint:=shipped`).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "nanovla_s_workcell.safetensors"
# The out-of-scope refusal's file (family centroids of the MiniLM vectors; `nanovla fit-scope` writes it).
SHIPPED_SCOPE = Path(__file__).resolve().parent / "checkpoints" / "scope_minilm.safetensors"


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
    only_if: str = ""  # a boolean launch argument that must be true for this node to run
    remappings: tuple[tuple[str, str], ...] = ()  # (from, to) topic names, relative
    # Restarted when it dies (launch_ros' respawn). Every software node is; the driver and the workcell are the arm
    # itself: their death stops the launch (the servos keep holding their last goal with torque on).
    respawn: bool = True


LAUNCH_ARGUMENTS = (
    LaunchArgument("namespace", "", "Namespace for every node, topic and service (e.g. arm1)."),
    LaunchArgument("params_file", "", "Parameter YAML; empty = the package's config/so101.yaml."),
    LaunchArgument("sim", "true", "true: run against the simulated arm; false: the real SO-101 on serial_port."),
    LaunchArgument("serial_port", "/dev/ttyACM0", "Serial device of the SO-101's Feetech bus (sim:=false)."),
    LaunchArgument("camera_source", "test_pattern", "Camera source: test_pattern, v4l2, video or folder."),
    LaunchArgument("camera_device", "/dev/video0", "V4L2 device for camera_source:=v4l2."),
    LaunchArgument("camera_path", "", "Video file or image folder for camera_source:=video|folder."),
    LaunchArgument("wrist_camera", "auto", "true: a second camera node publishes the wrist view on wrist_camera/* "
                                           "(with workcell:=true the workcell renders it); auto: when the checkpoint "
                                           "reads the wrist camera."),
    LaunchArgument("wrist_camera_device", "/dev/video2", "V4L2 device of the wrist camera (camera_source:=v4l2)."),
    LaunchArgument("checkpoint", "", "NanoVLA-S checkpoint for the policy (empty = none: the policy stays idle; "
                                     "shipped = the package's workcell-trained one, for workcell:=true)."),
    LaunchArgument("checkpoint_large", "", "NanoVLA-L checkpoint for the policy (empty = none; with a checkpoint "
                                           "but none here the instruction encoder loads only the small backbone)."),
    LaunchArgument("backend", "", "Policy inference runtime: torch, onnxruntime (exported to ONNX once, cached) or "
                                  "tensorrt; empty = the parameter file's (auto: onnxruntime on cpu)."),
    LaunchArgument("workcell", "false", "true: run the simulated MuJoCo workcell; the camera shows it and the "
                                        "driver drives it through its emulated servo bus (needs sim:=true)."),
    LaunchArgument("task", "pick_place", "Workcell task the scene is laid out for: pick_place, push, touch, stack."),
    LaunchArgument("seed", "0", "Workcell scene seed (cube and square positions)."),
    LaunchArgument("split", "train", "Workcell instruction split: train or heldout (held-out phrasings and pairings)."),
    LaunchArgument("look", "", "Workcell look: empty = the training workcell; FAMILY=STRENGTH = one perturbation "
                               "(e.g. light=0.6, distractors=2); random = each episode drawn from the randomisation "
                               "ranges (nanovla_ros.sim.perturbation)."),
    LaunchArgument("teleop", "false", "With workcell:=true: the workcell's scripted expert plays the leader arm "
                                      "and the driver follows it (demonstrations over the teleoperation path)."),
    LaunchArgument("record", "false", "true: run the recorder node (episode bags via its ~/start and ~/stop)."),
    LaunchArgument("bag_dir", "", "Folder for the recorder's episode bags (empty = the parameter file's)."),
)

NODES = (
    NodeSpec("workcell", "workcell_node", "nanovla_ros.nodes.workcell_node",
             {"task": "task", "seed": "seed", "split": "split", "expert_teleop": "teleop", "look": "look"}, only_if="workcell",
             respawn=False),
    NodeSpec("camera", "camera_node", "nanovla_ros.nodes.camera_node",
             {"source": "camera_source", "device": "camera_device", "path": "camera_path"}),
    NodeSpec("wrist_camera", "camera_node", "nanovla_ros.nodes.camera_node",
             {"source": "camera_source", "device": "wrist_camera_device"}, only_if="wrist_camera",
             remappings=(("camera/image_raw", "wrist_camera/image_raw"),
                         ("camera/camera_info", "wrist_camera/camera_info"))),
    NodeSpec("instruction_encoder", "instruction_encoder_node", "nanovla_ros.nodes.instruction_encoder_node"),
    NodeSpec("router", "router_node", "nanovla_ros.nodes.router_node"),
    NodeSpec("policy", "policy_node", "nanovla_ros.nodes.policy_node",
             {"checkpoint_small": "checkpoint", "checkpoint_large": "checkpoint_large", "backend": "backend"}),
    NodeSpec("so101_driver", "so101_driver_node", "nanovla_ros.nodes.so101_driver_node",
             {"port": "serial_port", "sim": "sim"}, respawn=False),
    NodeSpec("recorder", "recorder_node", "nanovla_ros.nodes.recorder_node", {"output_dir": "bag_dir"},
             only_if="record"),
)

RESPAWN_DELAY_S = 1.0  # between a node's death and its restart
# A node that dies more often than this within RESPAWN_WINDOW_S is not restarted again: the launch stops.
MAX_RESPAWNS = 5
RESPAWN_WINDOW_S = 60.0

# The recorder goes first, so that it closes its bag while everything it records is still there.
SHUTDOWN_ORDER = ("recorder", "policy", "so101_driver", "router", "instruction_encoder", "camera", "wrist_camera",
                  "workcell")


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
    if values["checkpoint"].strip() == "shipped":
        values["checkpoint"] = str(SHIPPED_CHECKPOINT)
    if values["wrist_camera"].strip().lower() == "auto":
        values["wrist_camera"] = str(any("wrist" in checkpoint_cameras(values[name])
                                         for name in ("checkpoint", "checkpoint_large"))).lower()
    return values


def checkpoint_cameras(path: str) -> tuple[str, ...]:
    """The cameras a checkpoint reads, from its safetensors header (no torch: launch files import this); () for
    no path or an unreadable file (the policy node then says what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return tuple(json.loads(header["__metadata__"]["config"]).get("cameras", ["front"]))
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def active_nodes(arguments: dict[str, str]) -> list[NodeSpec]:
    """The nodes these launch arguments start, in start order."""
    return [s for s in NODES if not s.only_if or _true(arguments.get(s.only_if, "false"))]


def workcell_paths(arguments: dict[str, str]) -> dict[str, str]:
    """Where the workcell process puts its servo bus, its arm's calibration and its frames: per namespace and
    ROS domain, so two graphs on one machine (two tests, two users) never share a bus or a camera."""
    namespace = arguments.get("namespace", "").strip("/").replace("/", "_") or "default"
    tag = f"{namespace}_d{os.environ.get('ROS_DOMAIN_ID', '0')}"
    return {"bus_link": f"/tmp/nanovla_{tag}_workcell_bus",
            "calibration_file": f"/tmp/nanovla_{tag}_workcell_calibration.json",
            "frames_name": f"nanovla_{tag}_workcell_frames", "wrist_frames_name": f"nanovla_{tag}_workcell_wrist_frames"}


INTEGER_ARGUMENTS = ("seed",)  # launch arguments whose parameters are integers


def _typed(name: str, value: str):
    """A launch argument's text as its parameter's type: booleans, the integer arguments, else text."""
    if value.strip().lower() in ("true", "false"):
        return _true(value)
    if name in INTEGER_ARGUMENTS:
        return int(value)
    return value


def node_parameter_overrides(spec: NodeSpec, arguments: dict[str, str]) -> dict[str, object]:
    """Parameter name -> typed value, for the launch arguments mapped onto this node.

    An empty argument means "keep the parameter file's value", so only non-empty values override. With
    workcell:=true the camera reads the workcell's frames and the driver opens its servo bus (waiting for
    the workcell to create it, as it would for a USB adapter being plugged in).
    """
    overrides = {p: _typed(a, arguments[a]) for p, a in spec.argument_parameters.items() if arguments.get(a, "") != ""}
    small_policy_only = arguments.get("checkpoint", "") and not arguments.get("checkpoint_large", "")
    if spec.name == "instruction_encoder" and small_policy_only:
        # A policy without a large checkpoint has no use for Gemma's features: loading it cost 7 s of a 2-core
        # CPU and ~0.5 GB at start-up, while the policy loaded beside it (stale frames and chunks at first).
        overrides["backbones"] = ["small"]
    if _true(arguments.get("workcell", "false")):
        paths = workcell_paths(arguments)
        wrist = _true(arguments.get("wrist_camera", "false"))
        overrides.update({
            "workcell": {"bus_link": paths["bus_link"], "frames_name": paths["frames_name"],
                         "calibration_file": paths["calibration_file"],
                         **({"wrist_frames_name": paths["wrist_frames_name"]} if wrist else {})},
            # The frames keep the workcell's render size (224, the policy's input): no resampling on the way.
            "camera": {"source": "sim", "path": paths["frames_name"], "width": 224, "height": 224},
            "wrist_camera": {"source": "sim", "path": paths["wrist_frames_name"], "width": 224, "height": 224},
            # The workcell's bus answers from a process busy with physics and rendering (replies up to
            # ~5 ms late, measured; longer while seven processes share two cores): the driver gets the
            # reply timeout of an FTDI-style adapter and a longer silence before it calls a servo lost.
            "so101_driver": {"sim": False, "port": paths["bus_link"], "calibration_file": paths["calibration_file"],
                             "port_wait_s": 60.0, "latency_timer_ms": 16.0, "servo_timeout_ms": 1000.0},
            "recorder": {"calibration_file": paths["calibration_file"]},
        }.get(spec.name, {}))
        if spec.name == "so101_driver" and _true(arguments.get("teleop", "false")):
            overrides["follow_topic"] = "leader/joint_commands"  # nanovla_ros.nodes.common.LEADER_COMMANDS_TOPIC
    return overrides


def ros_args(spec: NodeSpec, arguments: dict[str, str]) -> list[str]:
    """The ``--ros-args`` a node process is started with (pip-only launcher)."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if arguments["namespace"]:
        args += ["-r", f"__ns:=/{arguments['namespace'].strip('/')}"]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    args += ["--params-file", arguments["params_file"]]
    for name, value in node_parameter_overrides(spec, arguments).items():
        # -p values are parsed as YAML: strings are quoted so that e.g. a camera device "0" stays the
        # string its parameter is declared as; booleans and numbers keep their type.
        literal = json.dumps(value)  # JSON literals are YAML literals: "text", true, 3, 30.0
        args += ["-p", f"{name}:={literal}"]
    return args
