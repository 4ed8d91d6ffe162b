"""Run a CLI in a fresh process forked from one that has already imported torch (a fork server).

Each `python train.py ...` of the suite spent 4-6 s of a CPU on importing torch (the CUDA build
PyPI serves maps 3 GB of libraries), Dynamo (imported by the optimizer's first step) and Accelerate,
and on tearing them down, before any of artgan's code ran: most of `make test` on 2 cores. Here a
multiprocessing fork server imports those once per pytest worker; each run is still its own
process (own pid, exit status, signals, stdout and stderr), importing artgan's modules and running
the script as `__main__` from scratch. Only third-party libraries are preloaded, never artgan.

Kept deliberately small and free of pytest: the fork server imports this module in every child.
"""
from __future__ import annotations

import os
import sys

# Imported once by the fork server; read nothing from the environment a test changes per run
# (conftest runs cold whatever sets a variable outside WARM_ENV).
PRELOAD = ["numpy", "PIL.Image", "torch", "torch._dynamo", "torch.utils.tensorboard", "accelerate",
           "accelerate.utils", "safetensors.torch", "scipy.linalg", "tqdm.auto"]
# Variables artgan reads when it runs, not torch or its libraries at import: these may differ per run.
WARM_ENV = ("ARTGAN_", "TORCH_HOME", "PYTHONUNBUFFERED")


def child(argv: list[str], env: dict, cwd: str, out_path: str, err_path: str) -> None:
    """The forked process: the environment, working directory, argv, stdout and stderr of
    `python <argv>`, then the script or module as __main__; exits with its status."""
    import atexit
    import io
    import runpy
    import threading

    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", write_through=True)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = cwd
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # What the interpreter does on its way out: wait for threads, then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    os._exit(code)
