"""The one exception type that CLIs turn into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem with the user's input: say what was wrong and what to do."""
