"""Helpers shared by the per-component config dataclasses (no ROS imports).

Every component has one frozen dataclass whose fields are mirrored 1:1 as ROS parameters by
``nanovla_ros.nodes.params`` and as command-line flags by ``add_config_arguments`` (``--field-name``).
A field's ``help`` text becomes the parameter's description and the flag's help, so the documentation
lives in one place. Validation happens in ``__post_init__`` and raises
``ConfigError`` quoting the bad value, so training scripts, tests and ROS reject it the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
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


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per field of ``config_cls`` (but ``skip``), typed from its annotation, with the
    field's help; every flag defaults to None ("not given"), so ``config_values`` passes on only what was given and
    the dataclass keeps its defaults and validation. Booleans get ``--x`` / ``--no-x``; tuples take several values."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} (defaults and checks: {config_cls.__module__})")
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        flag, kind = "--" + field.name.replace("_", "-"), hints[field.name]
        # argparse formats help texts with %: a literal one is doubled
        text = f"{field.metadata.get('help', '')} (default: {field.default!r})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            group.add_argument(flag, nargs="+", type=element, default=None, help=text)
        else:
            group.add_argument(flag, type=kind, default=None, help=text)


def config_values(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The fields of ``config_cls`` given on the command line (``add_config_arguments``), tuples as tuples."""
    values = {}
    for field in dataclasses.fields(config_cls):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return values
