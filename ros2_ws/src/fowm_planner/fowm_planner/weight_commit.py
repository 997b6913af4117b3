"""Authenticated weight hot-swap (the contract in /fowm/weights + the commit parameters).

Blobs arrive on the weights topic and are kept by sha256 (the last few). A commit names a version,
a sha256 and an HMAC-SHA256 signature; it is accepted only if a kept blob has that digest, the
signature of (version, blob) verifies under the robot's key, the version is newer than the loaded
one, and the weights validate against the running agent (config hash, names, shapes, dtypes, finite
values). Every refusal says which check failed. Since the signature binds the version and versions
only rise, a recorded update replayed later cannot roll the robot back to older weights.
Pure logic, no ROS: the node calls `receive` from the topic callback and `commit` from its
parameter callback (both on the executor thread, so a swap never lands during a plan).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fowm_core.weights import (
    WeightsError,
    load_weights_into_bytes,
    verify_weights_signature,
    weights_sha256,
)

VERSION, SHA256, SIGNATURE = "model.version", "model.sha256", "model.signature"
COMMIT_PARAMETERS = (VERSION, SHA256, SIGNATURE)


@dataclass(frozen=True)
class CommitResult:
    accepted: bool
    reason: str  # why it was refused, or what was loaded


class WeightCommitter:
    """Keeps received blobs and validates + loads commits into `agent`."""

    def __init__(self, agent: Any, key: bytes | None, keep: int = 3, version: int = 0) -> None:
        """key: the HMAC key; None accepts unsigned commits (sim only: require_signature false).
        version: that of the weights loaded at start-up; commits must be newer."""
        self.agent = agent
        self.key = key
        self.version = version
        self.loaded_sha256: str | None = None  # of the last committed blob
        self.keep = keep
        self._blobs: OrderedDict[str, bytes] = OrderedDict()  # sha256 -> blob, oldest first
        self.accepted = 0
        self.rejected = 0
        self.last_rejection = ""

    def receive(self, blob: bytes) -> str:
        """Keep a blob from the weights topic; returns its sha256."""
        digest = weights_sha256(blob)
        self._blobs[digest] = blob
        self._blobs.move_to_end(digest)
        while len(self._blobs) > self.keep:
            self._blobs.popitem(last=False)
        return digest

    @property
    def received(self) -> list[str]:
        return list(self._blobs)

    def commit(self, version: int, sha256: str, signature: str) -> CommitResult:
        """Validate and load the blob `sha256` as `version`; on any failure the old weights stay."""
        result = self._commit(version, sha256, signature)
        if result.accepted:
            self.accepted += 1
        else:
            self.rejected += 1
            self.last_rejection = result.reason
        return result

    def _commit(self, version: int, sha256: str, signature: str) -> CommitResult:
        if version < 0:
            return CommitResult(False, f"model.version must be >= 0, got {version}")
        blob = self._blobs.get(sha256.lower())
        if blob is None:
            have = ", ".join(d[:12] for d in self._blobs) or "none"
            return CommitResult(
                False,
                f"no received weights blob has sha256 {sha256[:16]}... (received: {have}); publish it on "
                "the weights topic first",
            )
        if self.key is not None:
            try:
                verify_weights_signature(blob, signature, self.key, version)
            except WeightsError as e:
                return CommitResult(False, f"bad signature: {e}")
        if version == self.version and sha256.lower() == self.loaded_sha256:
            return CommitResult(True, f"version {version} is already loaded")  # an idempotent re-push
        if version <= self.version:
            return CommitResult(
                False,
                f"model.version {version} is not newer than the loaded version {self.version} (a replayed "
                "update, or a trainer restarted without its checkpoint: restart the planner to start over)",
            )
        try:
            # Validates everything against the running agent before touching it, then loads.
            meta = load_weights_into_bytes(self.agent, blob, what=f"weights {sha256[:12]}")
        except WeightsError as e:
            return CommitResult(False, f"invalid weights: {e}")
        self.version, self.loaded_sha256 = version, sha256.lower()
        return CommitResult(True, f"loaded version {version} ({meta.num_updates} updates)")
