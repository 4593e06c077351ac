"""The one error type the CLI turns into a clear one-line message (no traceback)."""


class UserError(Exception):
    """Bad input or a missing prerequisite that the user can fix."""
