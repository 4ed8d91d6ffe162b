"""Injected disk-full for the fault suite where no small filesystem can be mounted: with
ARTGAN_TEST_ENOSPC="NAME@N", the N-th file opened for writing whose path contains NAME takes
half of its first write and then fails with ENOSPC, as a full disk does. Loaded through
PYTHONPATH by the fault tests only; the product never sees this file."""
import builtins
import errno
import io
import os

_SPEC = os.environ.get("ARTGAN_TEST_ENOSPC", "")
if "@" in _SPEC:
    _needle, _, _nth = _SPEC.rpartition("@")
    _seen = [0]
    _real_open = io.open

    class _FullDisk:
        def __init__(self, f, path):
            self._f, self._path = f, path

        def write(self, data):
            if len(data) > 1:
                self._f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __iter__(self):
            return iter(self._f)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            try:
                self._f.close()
            except OSError:
                pass

    def _open(file, mode="r", *args, **kwargs):
        f = _real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") \
                and _needle in os.fsdecode(file):
            _seen[0] += 1
            if _seen[0] == int(_nth):
                return _FullDisk(f, os.fsdecode(file))
        return f

    builtins.open = io.open = _open
