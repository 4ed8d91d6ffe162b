"""Run a short training in this process and report every host read of a tensor (`bool()`,
`float()`, `.item()`, `.tolist()`, `.cpu()`, ...), every tensor made from Python data on a
named device and, on a GPU, every copy to it from pageable host memory, with the training step
it happened in, as JSON on the last line. On a GPU each of these waits for the device (a
device->host read, or a host->device copy that waits for the queued kernels).
    python tests/host_reads.py TRAIN_ARGS...   (used by test_train.py and tests/gpu)
"""
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train as train_cli  # noqa: E402
from gan.training.loop import launch  # noqa: E402
from gan.training.setup import resolve  # noqa: E402

READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"}
FROM_HOST = {"tensor", "as_tensor"}  # from Python data onto a device: a copy that waits for a GPU
COPIES = {"to", "cuda", "copy_"}  # from pageable host memory to a GPU: the copy waits for the queue
HOST_SIDE = ("/torch/utils/data/", "/data_prep/")  # the loader's own host tensors (indices, labels)


class HostReads(TorchFunctionMode):
    def __init__(self, trainer):
        super().__init__()
        self.trainer, self.reads = trainer, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        from_host = name in FROM_HOST and kwargs.get("device") is not None and not isinstance(args[0], torch.Tensor)
        out = func(*args, **kwargs)
        if name in COPIES and self.pageable_copy(name, args, out):
            name, from_host = "pageable " + name, True
        if name in READS or from_host:
            stack = traceback.extract_stack()[:-1]
            if not any(part in f.filename for f in stack[-6:] for part in HOST_SIDE):
                caller = next(f for f in reversed(stack) if "/torch/" not in f.filename)
                self.reads.append({"step": self.trainer.counters.step, "op": name,
                                   "at": f"{Path(caller.filename).name}:{caller.lineno}"})
        return out

    @staticmethod
    def pageable_copy(name, args, out) -> bool:
        """A host tensor in pageable memory copied to a GPU (`.to`/`.cuda`/`copy_`)."""
        src, dst = (args[1], args[0]) if name == "copy_" else (args[0], out)
        return (isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.device.type == "cpu"
                and dst.device.type != "cpu" and not src.is_pinned())


trainer = launch(resolve(train_cli.build_parser().parse_args(sys.argv[1:])))
cuda_syncs = []
sync_debug = bool(os.environ.get("ARTGAN_CUDA_SYNC_DEBUG")) and torch.cuda.is_available()
if sync_debug:
    # CUDA's own detector warns at every synchronizing call: record the step of each (and only
    # those warnings: others, from any library, are not syncs).
    torch.cuda.set_sync_debug_mode("warn")
    warnings.simplefilter("always")
    show = warnings.showwarning

    def record(message, *args, **kwargs):
        if "synchronizing CUDA operation" in str(message):
            cuda_syncs.append(trainer.counters.step)
        else:
            show(message, *args, **kwargs)

    warnings.showwarning = record
# When each checkpoint was written (the benchmarks' steady window must close before the last).
save, ckpt_times = trainer.save_checkpoint, []
trainer.save_checkpoint = lambda *a, **k: (ckpt_times.append(time.perf_counter()), save(*a, **k))[1]
with HostReads(trainer) as mode:
    trainer.train()
if sync_debug:
    torch.cuda.set_sync_debug_mode(0)
print(json.dumps({"steps": trainer.counters.step, "reads": mode.reads, "cuda_syncs": cuda_syncs,
                  "steady_window": trainer.steady_window, "steady_img_per_s": trainer.steady_img_per_s,
                  "ckpt_times": ckpt_times}))
