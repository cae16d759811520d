"""The one error type for client mistakes, shared by preprocessing and the service."""

from __future__ import annotations

from http import HTTPStatus


class InputError(ValueError):
    """A request the caller must change; the message says what to send instead."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, detail: list | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail  # request-schema errors: one entry per offending field (its "loc")
