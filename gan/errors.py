"""The exceptions CLIs turn into one line: `UserError` (exit 2) and `DiskFull` (exit 28, shared
with data_prep, which owns the disk-full detection: both packages write to disk)."""
from data_prep.errors import EXIT_DISK_FULL, DiskFull, disk_full, no_space_left, path_error  # noqa: F401


class UserError(Exception):
    """A problem with the user's input or files: say what was wrong and what to do."""

__all__ = ["EXIT_DISK_FULL", "DiskFull", "UserError", "disk_full", "no_space_left", "path_error"]
