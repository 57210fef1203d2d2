"""ros2 launch nanovla_ros so101.launch.py [sim:=true] [camera_source:=v4l2] [namespace:=arm1] ...

The node list, start order and launch arguments come from nanovla_ros.graph, which the pip-only
launcher (`nanovla launch so101`) reads too: one source of truth for both.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
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
    return actions


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                 for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
