"""The exceptions CLIs turn into one line: `UserError` (exit 2) and `DiskFull` (exit 28).

Both are data_prep's, re-exported: data_prep owns them (stdlib only, and both packages write to
disk and read stores), so one `except UserError` in a CLI catches a bad store as well as a bad flag."""
from data_prep.errors import EXIT_DISK_FULL, DiskFull, UserError, disk_full, no_space_left, path_error  # noqa: F401

__all__ = ["EXIT_DISK_FULL", "DiskFull", "UserError", "disk_full", "no_space_left", "path_error"]
