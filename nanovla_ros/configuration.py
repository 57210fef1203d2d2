"""Helpers shared by the per-component config dataclasses (no ROS imports).

Every component has one frozen dataclass whose fields are mirrored 1:1 as ROS parameters by
``nanovla_ros.nodes.params``. A field's ``help`` text becomes the parameter's description, so the
documentation lives in one place. Validation happens in ``__post_init__`` and raises
``ConfigError`` quoting the bad value, so training scripts, tests and ROS reject it the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; the message quotes it."""


def param(default: Any, help: str, *, read_only: bool = False) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field that documents itself as a ROS parameter."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple for sequence defaults so configs stay immutable")
    return dataclasses.field(default=default, metadata={"help": help, "read_only": read_only})


def require(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    require(value in choices, f"{name}={value!r} is not one of {list(choices)}")


def field_help(config_cls: type) -> dict[str, str]:
    """Field name -> help text, for parameter descriptors and documentation."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}
