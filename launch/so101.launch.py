"""ros2 launch nanovla_ros so101.launch.py [sim:=true] [camera_source:=v4l2] [namespace:=arm1] ...

The node list, start order and launch arguments come from nanovla_ros.graph, which the pip-only
launcher (`nanovla launch so101`) reads too: one source of truth for both. On a ROS host the arm's model is
published by robot_state_publisher (robot_description and the links' transforms from joint_states) instead of
the driver's own robot_description.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from nanovla_ros.description import robot_description
from nanovla_ros.graph import (
    LAUNCH_ARGUMENTS,
    PACKAGE,
    RESPAWN_DELAY_S,
    active_nodes,
    node_parameter_overrides,
    resolve_arguments,
)


def _nodes(context, *args, **kwargs):
    values = resolve_arguments({a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS})
    actions = []
    for spec in active_nodes(values):
        overrides = node_parameter_overrides(spec, values)  # already typed, as for the pip launcher
        if spec.name == "so101_driver":
            overrides = {**overrides, "publish_description": False}  # robot_state_publisher's, below
        actions.append(Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=values["namespace"],
            parameters=[values["params_file"], overrides],
            remappings=list(spec.remappings),
            output="screen",
            emulate_tty=True,
            respawn=spec.respawn,  # a dead policy, router, encoder or camera comes back; the driver holds meanwhile
            respawn_delay=RESPAWN_DELAY_S,
        ))
    actions.append(Node(package="robot_state_publisher", executable="robot_state_publisher",
                        namespace=values["namespace"], parameters=[{"robot_description": robot_description()}],
                        output="screen"))
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                 for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
