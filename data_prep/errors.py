"""The errors CLIs turn into one line: `UserError` (exit 2) and `DiskFull` (exit 28).

Disk-full detection lives here (stdlib only) because both packages write: data_prep its
stores, gan its checkpoints, exports and images; `gan.errors` re-exports it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

EXIT_DISK_FULL = 28  # = ENOSPC; distinct from a crash (1), a user error (2) and Ctrl-C (130)
LOW_SPACE = 1 << 20  # a write that failed with less than this free failed for lack of space
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class UserError(Exception):
    """A problem with the user's input: say what was wrong and what to do."""


class DiskFull(Exception):
    """No space left while writing; the message says where, what is intact and what to do."""


def path_error(exc: BaseException) -> str | None:
    """The one line for an OSError naming a path the OS refused (no permission, a file in the
    way, a missing mount): 'PATH: reason'. None for anything else, which is a bug to report."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return None


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes this process may still write on the filesystem holding `path` (root may use the
    blocks reserved for it); None when it cannot be told."""
    p = _existing(path)
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def mount_point(path: str | os.PathLike) -> str:
    p = Path(os.path.abspath(_existing(path)))
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def _existing(path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def no_space_left(exc: BaseException, path: str | os.PathLike) -> bool:
    """Whether `exc`, raised while writing under `path`, means the filesystem is full. Python
    raises OSError(ENOSPC); torch.save and safetensors raise generic errors ("basic_ios::clear:
    iostream error", "unexpected pos"), so for those the free space decides. Call it before
    removing partial files: that frees the space again."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    if "no space left" in str(exc).lower():
        return True
    if isinstance(exc, OSError) and exc.errno is not None:  # the OS said what went wrong, and it was not space
        return False
    if isinstance(exc, (RuntimeError, OSError)) or type(exc).__name__ == "SafetensorError":
        free = free_bytes(path)
        return free is not None and free < LOW_SPACE
    return False


def disk_full(path: str | os.PathLike, intact: str) -> DiskFull:
    """The one-line error: `no space left on MOUNT while writing PATH; INTACT`."""
    return DiskFull(f"no space left on {mount_point(path)} while writing {path}; {intact}")
