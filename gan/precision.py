"""Is bf16 worth using on this device?

Presets ask for bf16: GPUs and CPUs with bf16 instructions (AVX512-BF16, AMX, Arm's BF16) run it
fastest. A CPU without them still runs bf16, but oneDNN emulates it, and there it is far slower
than float32: a bf16 matmul ran at 1/60 of float32's speed on an AVX2-only EPYC, which turned a
30-minute run into a day. So the precision a run asks for by default follows the device; one the
user asks for explicitly is kept, with a note. torch only.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 `flags`, Arm `Features` in /proc/cpuinfo
FAST_RATIO = 1.2  # measured bf16/fp32 speed from which bf16 counts as the faster (where flags are unreadable)


def label(mixed_precision: str) -> str:
    """What a person calls a --mixed-precision value: "no" trains in float32."""
    return "float32" if mixed_precision == "no" else mixed_precision


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def matmul_flops(dtype: torch.dtype = torch.float32, device: str = "cpu", seconds: float = 0.3,
                 n: int | None = None) -> float:
    """FLOP/s of an n x n matmul in `dtype` on `device`, with this process's threads: what this
    machine can do at best. bench/train.py's MFU is against it (over 1.5 s), and `--preset auto`
    sizes a CPU half hour from it (over `seconds`, after one untimed product; two at least). On a
    CPU the size is 2048 unless a 512 probe says one such product would take over half of
    `seconds` (an emulated bf16 one takes 15 s): then the probe's size."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def rate(size: int, least: int, budget: float) -> float:
        a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
        a @ b
        sync()
        k, t = 0, time.perf_counter()
        while k < least or time.perf_counter() - t < budget:
            a @ b
            k += 1
            if k % 10 == 0:
                sync()
        sync()
        return 2 * size ** 3 * k / (time.perf_counter() - t)

    if n is None and not cuda:
        probe = rate(512, 1, 0.0)
        if 2 * 2048 ** 3 / probe > seconds / 2:
            return rate(512, 2, seconds)
    return rate(n or (8192 if cuda else 2048), 2, seconds)


def measure_bf16_ratio(n: int = 256, seconds: float = 0.05) -> float:
    """bf16 matmul throughput over float32's on this CPU (about 0.2 s)."""
    return matmul_flops(torch.bfloat16, "cpu", seconds, n) / matmul_flops(torch.float32, "cpu", seconds, n)


def bf16_verdict(flags: set[str] | None, ratio=None) -> tuple[bool, str]:
    """(fast, why) from the CPU's flags, or where those are unknown from `ratio()`, a measurement.
    Pure apart from calling `ratio`; unit-tested on made-up flags."""
    if flags is not None:
        have = [f for f in BF16_FLAGS if f in flags]
        if have:
            return True, f"this CPU has bf16 instructions ({', '.join(have)})"
        return False, "this CPU has no bf16 instructions (AVX512-BF16, AMX or Arm BF16)"
    r = ratio() if ratio is not None else measure_bf16_ratio()
    return r >= FAST_RATIO, f"bf16 matmul measured at {r:.2g}x float32's speed on this CPU"


@functools.lru_cache(maxsize=None)
def cpu_bf16() -> tuple[bool, str]:
    """Whether this machine's CPU runs bf16 faster than float32, and why (cached per process: every
    process of a multi-process run on one machine reads the same flags)."""
    return bf16_verdict(cpu_flags())


def bf16_fast(device) -> tuple[bool, str]:
    """(fast, why) for `device` (a torch.device or its name). Only CPUs are second-guessed: a GPU
    that cannot run bf16 is refused by Accelerate or torch with its own error."""
    if torch.device(device).type != "cpu":
        return True, ""
    return cpu_bf16()


def choose(requested: str, explicit: bool, fast: bool, why: str, asked_by: str = "") -> tuple[str, str]:
    """(precision, note) for a run that asks for `requested`: a default bf16 becomes float32 ("no")
    where bf16 is slow; an explicit one (`asked_by` names who asked, where not --mixed-precision) stays, with a
    note saying what it costs. Pure."""
    if requested != "bf16" or fast:
        return requested, ""
    if explicit:
        return "bf16", (f"note: bf16 as asked{' by ' + asked_by if asked_by else ''}, but {why}: bf16 is emulated "
                        "here and runs many times slower than float32 (--mixed-precision no)")
    return "no", (f"note: float32 instead of bf16: {why}, where bf16 is emulated and runs many times slower "
                  "(--mixed-precision bf16 forces it)")
