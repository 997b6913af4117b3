"""fowm_core.runtime: the process set-up every fowm program runs (torch threads, glibc malloc)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# Allocates and frees a 64 MB tensor 30 + 20 times (like a plan's or an update's activations) and reports
# the minor page faults the last 20 rounds took, after `configure_process(1)` or without it.
_PROBE = """
import json, resource, sys
import torch
tuned = None
if sys.argv[1] == "configure":
    from fowm_core.runtime import configure_process
    tuned = configure_process(1)
for _ in range(30):  # the heap settles into blocks it can reuse within a few rounds
    torch.ones(16 << 20)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20)  # 64 MB float32, written, then freed
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(json.dumps({"tuned": tuned, "faults": faults, "threads": torch.get_num_threads()}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
        env={**os.environ, **env}, timeout=120,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc thresholds are glibc's")
def test_configured_process_reuses_freed_memory_instead_of_faulting_it_back() -> None:
    default = _probe("plain")
    tuned = _probe("configure")
    assert tuned["tuned"] is True and tuned["threads"] == 1
    # 64 MB is 16384 pages of 4 KB: glibc's defaults map and fault it in again on every round
    assert default["faults"] > 20 * 10_000, default
    assert tuned["faults"] < 2_000, tuned
    # the opt-out leaves glibc's behaviour as it is
    off = _probe("configure", FOWM_MALLOC_TUNING="0")
    assert off["tuned"] is False and off["faults"] > 20 * 10_000, off
