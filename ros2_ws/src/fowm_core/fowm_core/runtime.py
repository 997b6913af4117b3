"""Process set-up for the programs that run fowm_core: torch threads and the C allocator.

Every plan and every update allocates and frees the same large tensors (a paper plan's (7, 563, 512)
activations, an update's 384 decoded frames). glibc's malloc hands blocks above its mmap threshold
back to the kernel on free and shrinks the heap once its free top exceeds the trim threshold, so the
next plan or update takes page faults to get the same memory back, zero-filled. Measured on the 2-core
CPU (2026-12-03): ~20k-35k page faults and 30-55 ms of kernel time per `paper` bf16 compiled plan
(~240 ms of work), ~12k faults and 15-22 ms per `realtime-cpu` pixel update (~85 ms). Raising both
thresholds keeps freed memory in the process for the next call, as PyTorch's GPU caching allocator
does on CUDA: the process's resident memory stays at its high-water mark instead of shrinking.

Set FOWM_MALLOC_TUNING=0 to keep glibc's defaults; non-glibc C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
"""Blocks up to this size come from the heap (reused) instead of fresh mmaps (faulted in on each use).
Covers the largest per-call tensors of the `paper` update at batch 256 (~150 MB of bf16 conv
activations)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the heap's top is kept up to this much instead of being returned to the kernel."""

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the first
    result). Returns True when both were applied; False when FOWM_MALLOC_TUNING=0, the C library is not
    glibc, or glibc refused a value (then its defaults stay, which is only slower)."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if os.environ.get("FOWM_MALLOC_TUNING", "1").strip() != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    return _tuned


def configure_process(threads: int) -> bool:
    """What every fowm program does first: `threads` torch CPU threads (at least 1) and
    `keep_freed_memory()`. Returns whether the allocator was tuned."""
    torch.set_num_threads(max(1, int(threads)))
    return keep_freed_memory()
