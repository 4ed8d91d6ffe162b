"""bf16 follows the device: a preset's bf16 becomes float32 on a CPU without bf16 instructions,
where oneDNN emulates it many times slower; an explicit one stays, with a note."""
import json
import math

import pytest
import torch

from conftest import run_main
from gan import precision
from gan.training import auto
from gan.config import ModelConfig


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert precision.cpu_flags(str(x86)) == {"fpu", "sse2", "avx2", "fma"}
    assert "bf16" in precision.cpu_flags(str(arm))
    assert precision.cpu_flags(str(tmp_path / "missing")) is None


def test_verdict_from_flags_or_from_a_measurement():
    assert precision.bf16_verdict({"avx2", "fma"}) == (False, "this CPU has no bf16 instructions (AVX512-BF16, AMX "
                                                                "or Arm BF16)")
    assert precision.bf16_verdict({"avx512f", "avx512_bf16"})[0]
    assert precision.bf16_verdict({"amx_bf16", "amx_tile"})[0]
    assert precision.bf16_verdict({"asimd", "bf16"})[0]
    # No flags to read (macOS, say): the measured speed decides.
    slow = precision.bf16_verdict(None, ratio=lambda: 0.017)
    assert slow == (False, "bf16 matmul measured at 0.017x float32's speed on this CPU")
    assert precision.bf16_verdict(None, ratio=lambda: 2.4)[0]
    assert precision.measure_bf16_ratio(n=64, seconds=0.01) > 0
    rate = precision.matmul_flops(torch.float32, n=64, seconds=0.01)
    assert math.isfinite(rate) and rate > 0


def test_choose_keeps_an_explicit_bf16_and_replaces_a_default_one():
    assert precision.choose("bf16", False, True, "") == ("bf16", "")
    assert precision.choose("no", False, False, "x") == ("no", "")
    prec, note = precision.choose("bf16", False, False, "this CPU has no bf16 instructions")
    assert prec == "no" and "float32 instead of bf16: this CPU has no bf16 instructions" in note
    assert "--mixed-precision bf16 forces it" in note
    prec, note = precision.choose("bf16", True, False, "why")
    assert prec == "bf16" and "bf16 as asked, but why: bf16 is emulated" in note and "--mixed-precision no" in note
    assert "as asked by the launcher, but" in precision.choose("bf16", True, False, "why", asked_by="the launcher")[1]
    # Only a CPU is second-guessed.
    assert precision.bf16_fast("cuda")[0]


def _flops(model: dict, train: dict | None = None) -> float:
    from gan.training.flops import model_summary

    return model_summary(ModelConfig(**model))["train_flops"]


def test_auto_preset_trains_in_float32_on_a_cpu_without_bf16():
    fast = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=2), _flops)
    slow = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=2, bf16=False), _flops)
    assert fast.train["mixed_precision"] == "bf16" and slow.train["mixed_precision"] == "no"
    assert "in float32 (this CPU has no bf16 instructions)" in slow.reasons[1]
    # Still about half an hour: fewer images, at float32's speed.
    rate = auto.CPU_FLOPS_2_CORES["bf16"] / auto.CPU_FLOPS_2_CORES["no"]
    assert slow.train["kimg"] == pytest.approx(fast.train["kimg"] / rate, rel=0.05)
    # An explicit bf16 there is estimated at the emulated speed: a run many times longer.
    f = _flops({**fast.model, "resolution": 64})
    dev = auto.DeviceFacts("cpu", cpus=2, bf16=False)
    assert auto.estimate_seconds(f, 10, dev, "bf16") > 20 * auto.estimate_seconds(f, 10, dev, "no")


def _dry(tmp_path, store, *flags):
    import train as train_cli

    proc = run_main(train_cli.main, "--data", store, "--dry-run", "--outdir", tmp_path, *flags)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout[:proc.stdout.index("\nG:")])["train"]["mixed_precision"], proc.stderr


@pytest.mark.parametrize("fast", [True, False])
def test_train_precision_follows_the_cpu(tmp_path, proc_store, monkeypatch, fast):
    """The real train.py path (presets, auto, explicit flags) on a CPU with and without bf16
    instructions (the verdict replaced; what it reads is tested above)."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_bf16", lambda: (fast, "test CPU" if fast else "this test CPU has no bf16"))
    prec, err = _dry(tmp_path, proc_store, "--preset", "demo")
    assert prec == ("bf16" if fast else "no")
    assert ("float32 instead of bf16: this test CPU has no bf16" in err) != fast
    prec, err = _dry(tmp_path, proc_store, "--preset", "demo", "--mixed-precision", "bf16")
    assert prec == "bf16" and ("emulated here" in err) != fast
    prec, err = _dry(tmp_path, proc_store)  # auto
    assert prec == ("bf16" if fast else "no") and ("in float32" in err) != fast
    assert _dry(tmp_path, proc_store, "--preset", "demo", "--mixed-precision", "no")[0] == "no"
    # The launcher's bf16 is the user's choice too.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    prec, err = _dry(tmp_path, proc_store, "--arch", "dcgan")
    assert prec == "bf16" and ("as asked by accelerate launch / accelerate config, but" in err) != fast


def test_refine_auto_precision_follows_the_cpu(monkeypatch):
    from gan.refine import auto_precision

    monkeypatch.setattr(precision, "cpu_bf16", lambda: (False, "no bf16"))
    assert auto_precision("adam", "cpu") == "no" and auto_precision("lbfgs", "cpu") == "no"
    monkeypatch.setattr(precision, "cpu_bf16", lambda: (True, ""))
    assert auto_precision("adam", "cpu") == "bf16" and auto_precision("lbfgs", "cpu") == "no"
