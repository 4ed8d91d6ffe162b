"""The exception CLIs turn into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem with the user's input or files: say what was wrong and what to do."""
