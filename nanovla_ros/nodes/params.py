"""Mirror a component's config dataclass 1:1 as ROS parameters with descriptors."""
from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from nanovla_ros.configuration import ConfigError

C = TypeVar("C")

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_ARRAY_TYPES = {
    str: ParameterType.PARAMETER_STRING_ARRAY,
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
}


def _parameter_type(annotation: typing.Any) -> tuple[int, type]:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        element = typing.get_args(annotation)[0]
        return _ARRAY_TYPES[element], element
    return _PARAMETER_TYPES[annotation], annotation


def declare_config(node: Node, config_cls: type[C]) -> C:
    """Declare one parameter per field of ``config_cls`` and build the config from their values.

    Raises ConfigError (from the dataclass's own validation) when a value is invalid, so a node
    started with a bad parameter fails at start-up with the same message tests and training give.
    """
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        ptype, element = _parameter_type(hints[field.name])
        descriptor = ParameterDescriptor(
            name=field.name,
            type=ptype,
            description=field.metadata.get("help", ""),
            read_only=field.metadata.get("read_only", False),
        )
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        value = node.declare_parameter(field.name, default, descriptor).value
        if isinstance(default, list):
            value = tuple(element(v) for v in value)
        elif element is float and isinstance(value, int):
            value = float(value)
        values[field.name] = value
    try:
        return config_cls(**values)
    except ConfigError as error:
        node.get_logger().fatal(f"invalid parameters for {config_cls.__name__}: {error}")
        raise
