"""Model weights as safetensors (files or bytes for the ROS weights topic), and checkpoints.

A weights blob is a safetensors file whose header metadata carries a `WeightsMetadata` (format
version, config hash and config, observation spec, action dim, update count, creation time)
and a sha256 checksum over that metadata and every tensor's name, dtype, shape and bytes, so a
truncated or bit-flipped blob is rejected instead of loaded as garbage. Every problem raises
`WeightsError` with a message naming it.

Authentication: a checksum proves a blob is intact, not who made it. On a robot, weights must come
from our trainer, so the trainer signs each blob with HMAC-SHA256 under a shared key file
(`sign_weights`) and the planner verifies the signature (`verify_weights_signature`) before it loads
anything. `generate_key_file` makes such a key (32 random bytes as hex, mode 0600).

A checkpoint (`save_checkpoint`) adds what exact resumption needs: the agent's training state
(optimisers, EMA target, counters, RNG), the buffers' contents and the sampler's RNG.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fowm_core.specs import ObservationSpec

FORMAT_VERSION = 1
CHECKPOINT_FORMAT_VERSION = 1
_META_KEY = "fowm"
_CHECKSUM_KEY = "fowm_sha256"
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


class WeightsError(ValueError):
    """Weights or checkpoint data that cannot be used; the message names the problem."""


class WeightsSource(Protocol):
    """What `save_weights` needs from an agent (FOWMAgent satisfies it)."""

    num_updates: int

    def get_weights(self) -> dict[str, torch.Tensor]: ...


@dataclass
class WeightsMetadata:
    """Facts stored next to the tensors, checked when a consumer loads them."""

    config_hash: str = ""  # config_hash(cfg) of the producing agent ("" = unknown)
    config: dict[str, Any] = field(default_factory=dict)  # config_to_dict(cfg), for humans and tools
    observation_spec: dict[str, Any] = field(default_factory=dict)  # ObservationSpec.to_dict()
    action_dim: int = 0  # action dimensionality the model was built for (0 = unknown)
    num_updates: int = 0  # gradient updates behind these weights
    created: str = ""  # UTC creation time, ISO 8601; filled in on save when empty
    format_version: int = FORMAT_VERSION  # layout of this metadata; bumped on incompatible change

    @classmethod
    def from_agent(cls, agent: Any) -> WeightsMetadata:
        """Metadata describing `agent` (reads its cfg, obs_spec, action_dim, num_updates)."""
        from fowm_core.config import config_hash, config_to_dict

        return cls(
            config_hash=config_hash(agent.cfg),
            config=config_to_dict(agent.cfg),
            observation_spec=agent.obs_spec.to_dict(),
            action_dim=int(agent.action_dim),
            num_updates=int(agent.num_updates),
        )


@dataclass
class LoadedWeights:
    """Validated tensors (CPU) and their metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: WeightsMetadata


def weights_sha256(data: bytes) -> str:
    """Hex sha256 of a weights blob, as published next to it for the planner's commit check."""
    return hashlib.sha256(data).hexdigest()


MIN_KEY_BYTES = 16


def load_key_file(path: str | Path) -> bytes:
    """The HMAC key in `path` (its bytes, surrounding whitespace stripped). Raises WeightsError if the
    file is missing, unreadable or shorter than MIN_KEY_BYTES."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise WeightsError(f"cannot read weights key file {path}: {e}") from e
    if len(key) < MIN_KEY_BYTES:
        raise WeightsError(
            f"weights key file {path} holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
            "(make one with `fowm-keygen PATH`)"
        )
    return key


def generate_key_file(path: str | Path) -> Path:
    """Write a new random key (32 bytes, hex) to `path`, readable by its owner only. Refuses to
    overwrite an existing file (the planner and trainer must share the same key)."""
    path = Path(path)
    if path.exists():
        raise WeightsError(f"{path} exists already; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def _signed_message(data: bytes, version: int) -> bytes:
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise WeightsError(f"weights version must be a non-negative int, got {version!r}")
    return b"fowm-weights-v1\n" + str(version).encode() + b"\n" + data


def sign_weights(data: bytes, key: bytes, version: int) -> str:
    """Hex HMAC-SHA256 under `key` of a weights blob bound to its version: a recorded (blob,
    signature) pair cannot be committed again under another version number (no rollback by replay)."""
    if len(key) < MIN_KEY_BYTES:
        raise WeightsError(f"signing key too short ({len(key)} bytes, need {MIN_KEY_BYTES})")
    return hmac.new(key, _signed_message(data, version), hashlib.sha256).hexdigest()


def verify_weights_signature(data: bytes, signature: str, key: bytes, version: int) -> None:
    """Raise WeightsError unless `signature` is `sign_weights(data, key, version)` (compared in
    constant time)."""
    if not isinstance(signature, str) or len(signature) != 64:
        raise WeightsError("signature is not a 64-character hex HMAC-SHA256")
    if not hmac.compare_digest(sign_weights(data, key, version), signature.lower()):
        raise WeightsError(
            f"signature mismatch: these weights were not signed as version {version} with this robot's key"
        )


def keygen_main(argv: list[str] | None = None) -> int:
    """`fowm-keygen PATH`: create the shared weights key for a trainer and its planner."""
    import argparse

    parser = argparse.ArgumentParser(prog="fowm-keygen", description=keygen_main.__doc__)
    parser.add_argument("path", help="key file to create (mode 0600); copy it to the robot and the trainer")
    args = parser.parse_args(argv)
    try:
        print(generate_key_file(args.path))
    except WeightsError as e:
        parser.exit(1, f"fowm-keygen: {e}\n")
    return 0


def _checksum(meta_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _as_tensors(agent_or_tensors: WeightsSource | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    raw = agent_or_tensors if isinstance(agent_or_tensors, Mapping) else agent_or_tensors.get_weights()
    out = {}
    for name, t in raw.items():
        if not isinstance(t, torch.Tensor):
            raise WeightsError(f"weight '{name}' is a {type(t).__name__}, not a torch.Tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WeightsError(f"refusing to save weight '{name}': it contains NaN or Inf")
        out[name] = t.detach().to("cpu").contiguous()
    if not out:
        raise WeightsError("no tensors to save")
    return out


def weights_to_bytes(
    agent_or_tensors: WeightsSource | Mapping[str, torch.Tensor], metadata: WeightsMetadata | None = None
) -> bytes:
    """Serialise weights (an agent or a name -> tensor mapping) to safetensors bytes.

    With an agent and no `metadata`, the metadata is read from the agent."""
    if metadata is None:
        if isinstance(agent_or_tensors, Mapping):
            raise WeightsError("metadata is required when saving a plain tensor mapping")
        metadata = WeightsMetadata.from_agent(agent_or_tensors)
    tensors = _as_tensors(agent_or_tensors)
    meta = asdict(metadata)
    meta["created"] = meta["created"] or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta_json = json.dumps(meta, sort_keys=True)
    return st_save(tensors, metadata={_META_KEY: meta_json, _CHECKSUM_KEY: _checksum(meta_json, tensors)})


def save_weights(
    path: str | Path,
    agent_or_tensors: WeightsSource | Mapping[str, torch.Tensor],
    metadata: WeightsMetadata | None = None,
) -> str:
    """Write weights to `path` atomically (temp file + rename); returns the sha256 of the file."""
    data = weights_to_bytes(agent_or_tensors, metadata)
    _atomic_write(Path(path), data)
    return weights_sha256(data)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_header(data: bytes, what: str) -> dict[str, Any]:
    if len(data) < 8:
        raise WeightsError(f"{what}: not a safetensors file ({len(data)} bytes, too short for a header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise WeightsError(
            f"{what}: not a safetensors file or truncated (header claims {n} bytes, file has {len(data)})"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{what}: corrupted safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise WeightsError(f"{what}: corrupted safetensors header (not a JSON object)")
    return header


def weights_from_bytes(
    data: bytes,
    *,
    reference: Mapping[str, torch.Tensor] | None = None,
    expected_spec: ObservationSpec | None = None,
    expected_action_dim: int | None = None,
    expected_config_hash: str | None = None,
    what: str = "weights",
) -> LoadedWeights:
    """Parse and validate a weights blob. Raises WeightsError naming the problem.

    reference: tensors the result must match in names, shapes and dtypes (e.g. agent.get_weights()).
    expected_*: checked against the stored metadata when given."""
    header = _read_header(data, what)
    stored_meta = header.get("__metadata__") or {}
    if _META_KEY not in stored_meta or _CHECKSUM_KEY not in stored_meta:
        raise WeightsError(f"{what}: safetensors file without FOWM metadata (not written by save_weights)")
    try:
        tensors = st_load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{what}: corrupted or truncated safetensors data ({e})") from e
    meta_json = stored_meta[_META_KEY]
    if _checksum(meta_json, tensors) != stored_meta[_CHECKSUM_KEY]:
        raise WeightsError(f"{what}: checksum mismatch, the data is corrupted")
    try:
        meta = WeightsMetadata(**json.loads(meta_json))
    except (TypeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{what}: unreadable FOWM metadata ({e})") from e
    if meta.format_version != FORMAT_VERSION:
        raise WeightsError(f"{what}: format version {meta.format_version}, this code reads {FORMAT_VERSION}")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WeightsError(f"{what}: tensor '{name}' contains NaN or Inf")
    if expected_config_hash is not None and meta.config_hash != expected_config_hash:
        raise WeightsError(
            f"{what}: config hash mismatch: weights were trained with config {meta.config_hash!r}, "
            f"expected {expected_config_hash!r}"
        )
    if expected_spec is not None and meta.observation_spec != expected_spec.to_dict():
        raise WeightsError(
            f"{what}: observation spec mismatch: weights expect {meta.observation_spec}, "
            f"got {expected_spec.to_dict()}"
        )
    if expected_action_dim is not None and meta.action_dim != expected_action_dim:
        raise WeightsError(
            f"{what}: action dim mismatch: weights have {meta.action_dim}, expected {expected_action_dim}"
        )
    if reference is not None:
        check_against(tensors, reference, what)
    return LoadedWeights(tensors, meta)


def check_against(
    tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], what: str = "weights"
) -> None:
    """Raise WeightsError unless `tensors` has exactly the names, shapes and dtypes of `reference`."""
    missing = sorted(set(reference) - set(tensors))
    unexpected = sorted(set(tensors) - set(reference))
    if missing:
        raise WeightsError(f"{what}: missing tensors {_names(missing)}")
    if unexpected:
        raise WeightsError(f"{what}: unexpected tensors {_names(unexpected)}")
    for name, ref in reference.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise WeightsError(
                f"{what}: tensor '{name}' has shape {tuple(t.shape)}, the model expects {tuple(ref.shape)}"
            )
        if t.dtype != ref.dtype:
            raise WeightsError(f"{what}: tensor '{name}' has dtype {t.dtype}, the model expects {ref.dtype}")


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def load_weights(
    path: str | Path,
    *,
    reference: Mapping[str, torch.Tensor] | None = None,
    expected_spec: ObservationSpec | None = None,
    expected_action_dim: int | None = None,
    expected_config_hash: str | None = None,
) -> LoadedWeights:
    """Read and validate a weights file written by `save_weights` (see `weights_from_bytes`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    return weights_from_bytes(
        data,
        reference=reference,
        expected_spec=expected_spec,
        expected_action_dim=expected_action_dim,
        expected_config_hash=expected_config_hash,
        what=str(path),
    )


def load_weights_into(agent: Any, path: str | Path, check_config: bool = True) -> WeightsMetadata:
    """Validate a weights file against `agent` (tensor names/shapes/dtypes, observation spec,
    action dim and, if `check_config`, the config hash) and load it. Returns its metadata."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    return load_weights_into_bytes(agent, data, what=str(path), check_config=check_config)


def load_weights_into_bytes(
    agent: Any, data: bytes, what: str = "weights", check_config: bool = True
) -> WeightsMetadata:
    """Like `load_weights_into`, for a blob received over the weights topic."""
    from fowm_core.config import config_hash

    loaded = weights_from_bytes(
        data,
        reference=agent.get_weights(),
        expected_spec=agent.obs_spec,
        expected_action_dim=int(agent.action_dim),
        expected_config_hash=config_hash(agent.cfg) if check_config else None,
        what=what,
    )
    agent.load_weights(loaded.tensors)
    return loaded.metadata


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | Path,
    agent: Any,
    buffers: Mapping[str, Any] | None = None,
    sampler: Any = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write everything needed to resume training exactly: weights (with metadata), the agent's
    training_state(), each buffer's state_dict() and the sampler's RNG state, plus `extra`
    (plain Python data, e.g. the episode counter). Written atomically."""
    state = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "weights": weights_to_bytes(agent),
        "training_state": agent.training_state(),
        "buffers": {name: b.state_dict() for name, b in (buffers or {}).items()},
        "sampler": sampler.state_dict() if sampler is not None else None,
        "extra": extra or {},
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | Path, agent: Any, buffers: Mapping[str, Any] | None = None, sampler: Any = None
) -> dict[str, Any]:
    """Restore a checkpoint written by `save_checkpoint` into `agent`, `buffers` and `sampler`
    (which must have been built with the same config and specs). Returns its `extra`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise WeightsError(f"checkpoint {path} does not exist") from e
    except Exception as e:  # torch raises a zoo of types (UnpicklingError, RuntimeError, EOFError, ...)
        raise WeightsError(
            f"checkpoint {path} is corrupted or not a checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise WeightsError(f"checkpoint {path}: not a FOWM checkpoint of format {CHECKPOINT_FORMAT_VERSION}")
    load_weights_into_bytes(agent, state["weights"], what=f"checkpoint {path}")
    agent.load_training_state(state["training_state"])
    for name, b in (buffers or {}).items():
        if name not in state["buffers"]:
            raise WeightsError(f"checkpoint {path} has no buffer {name!r} (has {sorted(state['buffers'])})")
        b.load_state_dict(state["buffers"][name])
    if sampler is not None:
        if state["sampler"] is None:
            raise WeightsError(f"checkpoint {path} holds no sampler state")
        sampler.load_state_dict(state["sampler"])
    return state["extra"]

