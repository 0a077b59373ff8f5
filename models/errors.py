"""The one exception type users see.

Anything raised as :class:`DeformRTError` is a problem with the user's input or environment
(unknown body name, bad config value, unsafe checkpoint, missing plugin library ...). The CLI
prints its message as one line and exits with status 1; other exceptions are bugs and keep
their traceback.
"""


class DeformRTError(Exception):
    """A user-facing error whose message is a complete, one-line explanation."""
