"""Process-level plumbing for the trainer: the Accelerator, the shared run dir, and small
helpers (OOM detection, checksums, fault-injection specs, schedules)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

from ..errors import UserError


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg


def make_accelerator(mixed_precision: str, outdir: str) -> Accelerator:
    import warnings

    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # DDP compares gradient strides literally: a (1, N) weight's gradient laid out (1, 1) instead
    # of (N, 1) is the same memory order, copied into its bucket as is. Not worth a warning per rank.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # torch 2.13 renamed broadcast_buffers (forward_sync_buffers); older ones know only the old name.
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")

    if mixed_precision == "fp16" and training_device() == "cpu":
        # Accelerate would quietly train in float32 here: CPUs have no fp16 loss scaling.
        raise UserError("--mixed-precision fp16 needs a GPU; on CPU use --mixed-precision no (or bf16, on a CPU "
                        "with bf16 instructions)")
    try:
        # The project dir moves to the run dir once it exists (share_run_dir).
        return Accelerator(mixed_precision=mixed_precision, log_with="tensorboard",
                           # the buffers are synced once per step instead (BufferSync)
                           kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
                           project_config=ProjectConfiguration(project_dir=str(outdir)),
                           # Without an accelerator, Accelerate only forms a multi-process (gloo)
                           # group under torchrun when told it runs on CPU.
                           cpu=training_device() == "cpu")
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--mixed-precision {mixed_precision}: {str(e).splitlines()[0]}") from None


def set_kernel_choice(deterministic: bool, device: torch.device) -> None:
    """How a GPU picks its kernels. By default cuDNN times each convolution's algorithms once per
    shape and keeps the fastest (every phase's shapes are fixed), but those can differ between two
    processes and some add in a varying order: two runs from one seed drift apart, and Adam turns a
    last-bit difference into a learning-rate-sized one within a few steps. `deterministic` trades that
    speed for the same weights every time: fixed algorithms, PyTorch's deterministic kernels (an op
    without one warns, naming itself), and cuBLAS's fixed workspace. A CPU run is reproducible
    either way."""
    if deterministic:
        # cuBLAS reads it when its first handle is made: before the first matmul on the GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def training_device() -> str:
    """The kind of device Accelerate will train on here: "cuda", "mps", "xpu" or "cpu"."""
    xpu = getattr(torch, "xpu", None)
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "xpu" if xpu and xpu.is_available() else "cpu"


class Compiler:
    """torch.compile'd modules and functions for the main phases, with a clean fallback: when
    compiling fails (no C++ or Triton toolchain, an unsupported op, a backend error) training
    goes on eagerly after one note. The regularization phases always run eagerly: compiled
    graphs do not support the double backward that R1 and path length take. (Taking R1's inner
    gradient with torch.func.grad inside the compiled graph instead ran, but silently gave zero
    gradients for most of D's parameters in torch 2.14; compare pytorch/pytorch#136662.)"""

    def __init__(self, enabled: bool, note, backend="inductor", mode: str = "default"):
        self.enabled = enabled  # False: modules are returned as they are
        self.note = note  # prints the one-line fallback note
        self.backend = backend  # a torch.compile backend (tests use a cheap or a broken one)
        self.mode = mode  # inductor's mode; the others take none
        self._compiled: dict = {}
        if enabled and not torch.cuda.is_available():
            # Inductor's C++ path imports torch.utils.cpp_extension, which warns on a CPU-only machine
            # that it found no CUDA runtime: true, and nothing a CPU run needs.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    @property
    def cudagraphs(self) -> bool:
        """Whether compiled graphs replay as CUDA graphs (on CUDA; inductor leaves CPU graphs as
        they are). The trainer then marks where each step begins, so that a graph's outputs
        from the last step may be overwritten by this one's."""
        return self.enabled and self.backend == "inductor" and self.mode in ("reduce-overhead", "max-autotune")

    def __call__(self, fn):
        """`fn` (a module or a function) compiled, or `fn` itself when compiling is off."""
        if not self.enabled:
            return fn
        if id(fn) not in self._compiled:
            mode = self.mode if self.backend == "inductor" else None
            self._compiled[id(fn)] = torch.compile(fn, backend=self.backend, mode=mode, dynamic=False)
        return self._compiled[id(fn)]

    def failed(self, e: BaseException) -> bool:
        """True if `e` came from compiling; compiling is then off for the rest of the run."""
        from torch._dynamo.exc import TorchDynamoException

        if not self.enabled or not isinstance(e, TorchDynamoException) or is_oom(e):
            return False
        self.enabled = False
        self._compiled.clear()
        while getattr(e, "inner_exception", None) is not None or e.__cause__ is not None:
            e = getattr(e, "inner_exception", None) or e.__cause__  # the backend's own error
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        self.note(f"note: torch.compile failed ({reason[:200]}); training goes on without it (--compile off "
                  "skips the attempt)")
        return True


def compile_backend(faults: dict):
    """The backend for `Compiler`: inductor, or a test hook's ("compile_eager": traced but not
    code-generated, fast on CI; "compile_fail": fails like a missing toolchain)."""
    if "compile_fail" in faults:
        def broken(gm, example_inputs):
            raise RuntimeError("injected: no working C++ compiler")
        return broken
    return "aot_eager" if "compile_eager" in faults else "inductor"


SEEN = ".process-check"  # written by the main process in a new run dir, read by the others, removed
SEE_WAIT = 10.0  # seconds a process keeps looking for it: a network filesystem may show a new file late


def _sees(path: Path, token: str, wait: float) -> bool:
    """Whether `path` holds `token`, looking again for up to `wait` seconds."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            if path.read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def share_run_dir(acc: Accelerator, make, facts: dict | None = None, new: bool = False) -> Path:
    """Create the run dir on the main process and give every process the same path. With
    several processes, each then checks that it sees that dir and agrees with the main process
    on `facts` (what it is about to train from: the store, the checkpoint), or every process
    stops with the same one-line error (see `disagreement`); a `new` run dir is removed then."""
    import secrets
    import socket

    from accelerate.utils import broadcast_object_list, gather_object

    token = secrets.token_hex(8)
    if acc.is_main_process:
        run_dir = Path(make())
        if acc.num_processes > 1:
            (run_dir / SEEN).write_text(token)
        obj = [str(run_dir), token]
    else:
        obj = [None, None]
    if acc.num_processes > 1:
        obj = broadcast_object_list(obj)
        run_dir = Path(obj[0])
        sees = _sees(run_dir / SEEN, obj[1], 0.0 if "no_fs_wait" in faults_from_env() else SEE_WAIT)
        views = gather_object([{"host": socket.gethostname(), "sees run dir": sees, **(facts or {})}])
        acc.wait_for_everyone()
        if acc.is_main_process:
            (run_dir / SEEN).unlink(missing_ok=True)
        problem = disagreement(views, str(run_dir))
        if problem:
            if new and acc.is_main_process:
                shutil.rmtree(run_dir, ignore_errors=True)
            # Every process stops here, past the last collective: leave the process group first
            # (exiting with it open aborts the process: "terminate called without an active exception").
            torch.distributed.destroy_process_group()
            raise UserError(problem)
    acc.project_configuration.project_dir = str(run_dir)
    acc.project_configuration.logging_dir = str(run_dir)
    return run_dir


def disagreement(views: list[dict], run_dir: str) -> str | None:
    """Why the processes cannot train one run together (one sentence), or None. `views[k]` is
    what process k sees: its host, whether it sees the run dir the main process made, the
    store's manifest hash and the checkpoint it would resume. On machines that do not share
    the run dir, each process would write its part of every checkpoint where no resume finds it;
    on different stores, or from different checkpoints, the processes would train different runs."""
    main = views[0]

    def where(k: int) -> str:
        return f"process {k} (on {views[k]['host']})"

    for k, v in enumerate(views[1:], 1):
        if not v["sees run dir"]:
            return (f"{where(k)} does not see the run dir {run_dir} that process 0 (on {main['host']}) made: "
                    "every machine must share --outdir (NFS or another shared filesystem, same path everywhere)")
    for k, v in enumerate(views[1:], 1):
        if v.get("store") != main.get("store"):
            return (f"{where(k)} reads a different store at --data than process 0 (manifest {str(v.get('store'))[:12]} "
                    f"vs {str(main.get('store'))[:12]}): give every machine the same prepared store")
        if v.get("resume") != main.get("resume"):
            return (f"{where(k)} would resume from {v.get('resume') or 'nothing'} but process 0 from "
                    f"{main.get('resume') or 'nothing'}: every machine must see the same checkpoints (shared --outdir)")
    return None


class BufferSync:
    """Rank 0's model state buffers (StyleGAN's w_avg and noise_const, BatchNorm's running
    statistics) copied to every other rank once per step, before the step's first forward.

    DDP's `broadcast_buffers` does this at every forward, and artgan turns it off: before torch 2.12
    DDP's copy bumped the buffers' version counters, so on every rank but 0 a buffer that an earlier
    forward had saved for backward (BatchNorm's running statistics, the filter kernels) looked
    modified, and backward failed ("modified by an inplace operation"; D runs on reals and on fakes
    before one backward). Between steps no graph holds them. The constant buffers (non-persistent:
    the filter kernels) are the same on every rank by construction and are not sent. One broadcast."""

    def __init__(self, num_processes: int, *models: torch.nn.Module):
        # (model, names of its persistent buffers); the tensors are looked up at each call, so a
        # later .to() that replaces them is followed.
        self.models = [] if num_processes == 1 else [
            (m, {name for name, _ in m.named_buffers()} & set(m.state_dict())) for m in models]

    @torch.no_grad()
    def __call__(self) -> None:
        buffers = [b for m, names in self.models for name, b in m.named_buffers() if name in names]
        if not buffers:
            return
        flat = torch.cat([b.reshape(-1).double() for b in buffers])  # exact for float32 and counts
        torch.distributed.broadcast(flat, src=0)
        for b, v in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(v.view_as(b))


def checksum(model: torch.nn.Module) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(model.parameters()):
        total += (p.detach().double().cpu() * (1 + (torch.arange(p.numel()).reshape(p.shape) % 7))).sum() * (i + 1)
    return total


def next_multiple(n: int, every: float) -> float:
    every = max(every, 1)
    return (n // every + 1) * every


FAULTS_ENV = "ARTGAN_TEST_FAULTS"  # test hook: "nan@12,13;oom@3" (step indices, 0-based)


def faults_from_env() -> dict:
    """Fault injection for tests, from the environment only: never saved, never resumed."""
    return parse_faults(os.environ.get(FAULTS_ENV, ""))


def parse_faults(spec: str) -> dict:
    out: dict = {}
    for part in filter(None, spec.split(";")):
        kind, _, steps = part.partition("@")
        out[kind.strip()] = {int(s) for s in steps.split(",") if s.strip()}
    return out


def micro_batch(batch: int, world: int, grad_accum: int) -> int:
    """Per-process micro-batch; a global batch that does not split evenly is a user error."""
    if batch % (world * grad_accum):
        raise UserError(f"--batch {batch} is not divisible by {world} processes x --grad-accum "
                        f"{grad_accum}; pick a multiple of {world * grad_accum}")
    return batch // (world * grad_accum)
