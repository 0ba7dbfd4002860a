"""The one error type a user can cause.

The CLI prints a `DlxError` as a single plain line and exits with code 2 (no traceback unless
`DLX_DEBUG=1`); anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 3  # SIGTERM/SIGINT: the run saved and can be resumed
EXIT_DIVERGED = 4  # non-finite loss or gradient: the last good checkpoint is kept


class DlxError(Exception):
    """A mistake in what the user asked for: bad config value, missing data, unreadable checkpoint."""


class ConfigError(DlxError):
    """A config key has a value that is not allowed. The message names the key, the value and the choices."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class Aborted(KeyboardInterrupt):
    """A run stopped at once (a second Ctrl-C) without its final save; the message says how to resume it."""
