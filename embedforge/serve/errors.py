"""Every error leaves the server in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

``type`` is ``invalid_request_error`` for 4xx and ``server_error`` for 5xx, as OpenAI's API uses
them; ``code`` is a stable reason clients can branch on (the table is in the README's server section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_content", "error_response", "install_error_handlers"]


_STATUS_CODES = {  # a default `code` for statuses raised without one
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "invalid_type",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a route raises on purpose; it becomes an OpenAI-shaped response with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _STATUS_CODES.get(status)
        self.param = param
        self.headers = dict(headers or {})


def error_content(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": param,
            "code": code or _STATUS_CODES.get(status),
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_content(status, message, code=code, param=param), status_code=status, headers=headers)


_INPUT_TYPES = "a string, a list of strings, a list of token ids (integers) or a list of token-id lists"


def _text_param(loc: Sequence[Any]) -> str | None:
    """``("body", "texts_1", 3)`` -> ``"texts_1[3]"``; union branch names (``list[...]``, ``function-after[...]``) are dropped."""
    parts = [p for p in (loc[1:] if loc and loc[0] == "body" else loc) if isinstance(p, int) or "[" not in str(p)]
    if not parts:
        return None
    return str(parts[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[1:])


def _param(loc: Sequence[Any]) -> str | None:
    """As :func:`_text_param`, but a type error in the ``input`` union names ``input`` alone (which branch was meant is a guess)."""
    param = _text_param(loc)
    return "input" if param is not None and param.startswith("input") else param


def _validation_response(err: RequestValidationError) -> JSONResponse:
    errors = list(err.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "the request body is not valid JSON", code="invalid_json")
    # Unencodable text (a lone surrogate) first: in a union it sits among the other branches' type errors.
    bad_text = next((e for e in errors if e.get("type") == "invalid_text"), None)
    if bad_text is not None:
        param = _text_param(bad_text.get("loc", ()))
        return error_response(400, f"'{param}': {bad_text.get('msg')}", code="invalid_text", param=param)
    first = errors[0] if errors else {}
    loc = first.get("loc", ())
    param = _param(loc)
    if param is None:
        return error_response(422, "the request body must be a JSON object", code="invalid_body")
    if first.get("type") == "missing":
        return error_response(422, f"missing required parameter '{param}'", code="missing_required_parameter", param=param)
    if param == "input":
        return error_response(422, f"'input' must be {_INPUT_TYPES}", code="invalid_type", param=param)
    return error_response(422, f"'{param}': {first.get('msg', 'invalid value')}", code="invalid_type", param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Route every refusal, ours, FastAPI's and Starlette's, through :func:`error_response`.

    Unexpected exceptions (500) are answered by :class:`~embedforge.serve.middleware.ApiMiddleware`.
    """

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))
