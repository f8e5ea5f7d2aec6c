"""Errors that the CLI turns into one clear line and exit code 2."""

from __future__ import annotations

import os

__all__ = ["EmbedforgeError", "InputError"]


class EmbedforgeError(Exception):
    """Base class of every error embedforge raises on purpose."""


class InputError(EmbedforgeError, ValueError):
    """Bad user input: a missing or malformed file, a wrong column, a directory that is no model.

    ``str(err)`` is ``"PATH:LINE: message"`` (or ``"PATH: message"`` / ``"message"``), the form
    compilers use, so editors and terminals can jump to the place.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)
