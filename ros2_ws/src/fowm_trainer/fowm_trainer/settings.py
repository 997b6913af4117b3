"""Config plumbing shared by fowm-pretrain and the nodes: typed dataclass fields with one-line docs
that double as ROS parameters, ROS params files read without ROS, and the
observation config built from flat parameters.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from fowm_xarm.observation import ObservationConfig


def param(default: Any, doc: str) -> Any:
    """A config field whose doc becomes the ROS parameter description (scalars; lists use
    field(default_factory=..., metadata={"doc": ...}))."""
    return field(default=default, metadata={"doc": doc})


def observation_config(image_size: int, image_crop: list[int] | tuple[int, ...]) -> ObservationConfig:
    """ObservationConfig from flat parameters; an empty crop means the central square of the frame."""
    return ObservationConfig(image_size=int(image_size), crop=tuple(image_crop) if len(image_crop) else None)


def read_params_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """The `ros__parameters` of `node_name` in a ROS 2 params file (also accepts the `/**` section)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read params file {path}: {exc}") from exc
    for key in (node_name, f"/{node_name}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
    raise ValueError(f"params file {path} has no '{node_name}: ros__parameters:' section")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from `values`, naming unknown keys (lists stay lists)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown parameter {unknown[0]!r} (known: {sorted(names)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if hints[name] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[name] = value
    return cls(**kwargs)
