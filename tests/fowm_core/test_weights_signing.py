"""HMAC-SHA256 signing of weight blobs and the key file that the trainer and planner share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fowm_core.weights import (
    WeightsError,
    generate_key_file,
    load_key_file,
    sign_weights,
    verify_weights_signature,
)


def test_sign_and_verify_round_trip_and_tampering(tmp_path: Path) -> None:
    key = load_key_file(generate_key_file(tmp_path / "robot.key"))
    blob = os.urandom(1000)
    sig = sign_weights(blob, key, 3)
    verify_weights_signature(blob, sig, key, 3)
    with pytest.raises(WeightsError, match="signature mismatch"):
        verify_weights_signature(blob[:-1] + bytes([blob[-1] ^ 1]), sig, key, 3)
    # The signature binds the version: the same blob and signature under another version is refused
    # (a recorded update cannot be replayed as a newer one).
    with pytest.raises(WeightsError, match="not signed as version 4"):
        verify_weights_signature(blob, sig, key, 4)
    other = load_key_file(generate_key_file(tmp_path / "other.key"))
    with pytest.raises(WeightsError, match="signature mismatch"):
        verify_weights_signature(blob, sign_weights(blob, other, 3), key, 3)
    with pytest.raises(WeightsError, match="64-character"):
        verify_weights_signature(blob, "abc", key, 3)
    with pytest.raises(WeightsError, match="non-negative int"):
        sign_weights(blob, key, -1)


def test_key_files_are_private_never_overwritten_and_checked(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(WeightsError, match="exists already"):
        generate_key_file(path)
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(WeightsError, match="at least 16"):
        load_key_file(tmp_path / "short")
    with pytest.raises(WeightsError, match="cannot read"):
        load_key_file(tmp_path / "missing")


def test_keygen_command(tmp_path: Path) -> None:
    target = tmp_path / "keys" / "robot.key"
    main = "import sys; from fowm_core.weights import keygen_main; sys.exit(keygen_main())"
    cmd = [sys.executable, "-c", main]
    done = subprocess.run([*cmd, str(target)], capture_output=True, text=True)
    assert done.returncode == 0 and len(load_key_file(target)) == 64
    again = subprocess.run([*cmd, str(target)], capture_output=True, text=True)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
