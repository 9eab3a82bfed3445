"""Errors a user can act on. The CLI and the nodes prefix them with the command or node name."""


class BGFSError(ValueError):
    """Bad input or a missing file: the message says what is wrong and what to do."""
