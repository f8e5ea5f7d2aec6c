"""One pure-ASGI middleware in front of every route: metrics, API keys, request-body limit.

Order matters and is fixed here: the request is timed and counted whatever happens; the API key
is checked before the body is read (an unauthenticated client learns nothing about its JSON);
the body limit applies before the body is parsed. (The request head's size and time are bounded
earlier still, in the HTTP protocol: :mod:`embedforge.serve.limits`.)

With keys set, every route but ``/health`` needs one: the API, the page, ``/map`` (the corpus's
texts), ``/metrics``, ``/docs``, ``/redoc`` and ``/openapi.json``. API clients send
``Authorization: Bearer KEY``; a browser, which cannot add that header to a page load, is asked
for HTTP Basic credentials (any user name, the key as password) and then sends them with the
page's own requests too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedforge.serve.errors import error_response
from embedforge.serve.metrics import Metrics

__all__ = ["ApiMiddleware", "check_api_key", "OPEN_PATHS", "API_PREFIX"]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})  # what needs no key even when keys are set (liveness probes)
API_PREFIX = "/v1/"  # API routes answer a missing key with a Bearer challenge, the others with Basic (browsers ask)


def check_api_key(header: str | None, keys: Sequence[bytes]) -> bool:
    """Whether ``header`` is ``Bearer KEY`` or ``Basic base64(ANY_USER:KEY)`` with one of ``keys``, in constant time.

    Every key is compared (no early exit), so the time taken does not tell which one was close.
    """
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        given = decoded.partition(b":")[2]
    elif scheme.lower() == "bearer":
        given = token.strip().encode("latin-1")  # the header's own decoding: any byte string round-trips
    else:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; FastAPI re-raises HTTPExceptions while reading a body, so it becomes a 413."""


class ApiMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        api_keys: Sequence[str],
        max_body_bytes: int,
        endpoints: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.endpoints = endpoints  # route paths without parameters, to label requests refused before routing
        self.metrics = metrics
        self.keys = [key.encode("utf-8") for key in api_keys]
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before it responds
        started = False

        async def send_counted(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self._handle(scope, receive, send_counted)
        except Exception as exc:
            # A bug, not a refusal: log it and answer 500 in the usual shape. Handled here rather
            # than by Starlette's outermost handler, which re-raises and makes uvicorn drop the
            # connection under the client.
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            response = error_response(500, f"internal server error ({type(exc).__name__})", code="internal_error")
            await response(scope, receive, send_counted)
        finally:
            # The route template, never the raw path: a label per URL would grow without bound.
            endpoint = getattr(scope.get("route"), "path", None)
            if endpoint is None:
                endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.keys and scope["path"] not in OPEN_PATHS and scope["method"] != "OPTIONS":
            header = headers.get("authorization")
            if not check_api_key(header, self.keys):
                message = (
                    "missing API key: send the header 'Authorization: Bearer YOUR_KEY'"
                    if not header
                    else "invalid API key"
                )
                api = scope["path"].startswith(API_PREFIX)
                challenge = "Bearer" if api else 'Basic realm="embedforge", charset="UTF-8"'
                response = error_response(401, message, code="invalid_api_key", headers={"WWW-Authenticate": challenge})
                await response(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            response = error_response(
                413, self._too_large_message(), code="request_too_large", headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _too_large_message(self) -> str:
        return f"request body larger than the server's limit of {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that counts body bytes (a chunked body has no Content-Length to check)."""
        received = 0
        limit = self.max_body_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(413, self._too_large_message())
            return message

        return limited
