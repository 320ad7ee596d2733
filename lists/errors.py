"""The error hierarchy: every error a user can cause carries a one-line, user-facing message."""

from __future__ import annotations


class PatronError(Exception):
    """Root of Patron's errors; ``str(error)`` is the one-line message shown to the user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(PatronError, LookupError):
    """A named thing (list, contact, segment, file) does not exist."""


class InvalidInputError(PatronError, ValueError):
    """Input that cannot be accepted as given."""


class ConflictError(PatronError):
    """The request contradicts the stored state (a duplicate name, a forbidden transition)."""


class ConfigurationError(PatronError):
    """Settings are missing or inconsistent."""
