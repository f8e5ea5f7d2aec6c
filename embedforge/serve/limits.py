"""Connection limits in front of the app: request-head size and time, idle keep-alive.

uvicorn bounds the request head only in its h11 parser (``h11_max_incomplete_event_size``) and
never times out a connection that has not finished sending its head. With httptools (the faster
parser, used when installed) a client could send a 100 MB header before any route or key check
ran. :class:`LimitedHttpToolsProtocol` adds both limits to uvicorn's httptools protocol:

* a head (request line + headers) over ``max_head_bytes`` is answered ``431`` and the
  connection closed; bytes of an incomplete head are counted as they arrive, so memory stays
  bounded by the limit plus one read;
* a head not complete within ``head_timeout_s`` of its first byte (or of the connection's
  opening) closes the connection: a client that connects and stays silent, or dribbles a header
  (slowloris), holds no connection for long.

Idle connections between requests are closed by uvicorn's own keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error_content

__all__ = ["uvicorn_config"]

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: h11, whose own limit is set in uvicorn_config
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class _HeadTooLarge(Exception):
    pass


if HttpToolsProtocol is not None:

    class LimitedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol with a head-size limit and a head timeout (set per server by subclassing)."""

        max_head_bytes = 16 * 1024
        head_timeout_s = 10.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # what arrives now belongs to a request head (or nothing has come yet)
            self._raw_bytes = 0  # bytes received while the current head stayed incomplete
            self._parsed_bytes = 0  # request line and headers the parser has handed over for the current head
            self._heads = 0  # heads completed on this connection
            self._too_large = False
            self._head_timer: asyncio.TimerHandle | None = None

        # ---- timer ----

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self.logger.debug("closing a connection without a complete request head after %.0f s", self.head_timeout_s)
                self.transport.close()

        # ---- protocol ----

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            in_head, heads = self._in_head, self._heads
            if in_head:
                self._arm_head_timer()
            super().data_received(data)
            if in_head and self._in_head and heads == self._heads and not self.transport.is_closing():
                self._raw_bytes += len(data)  # all of it belongs to a head still incomplete
                if self._raw_bytes > self.max_head_bytes:
                    self._send_431()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._parsed_bytes = 0

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._count(len(self.url))
            self._in_head = False
            self._heads += 1
            self._raw_bytes = 0
            self._cancel_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True

        def _count(self, size: int) -> None:
            self._parsed_bytes += size
            if self._parsed_bytes > self.max_head_bytes:
                self._too_large = True
                raise _HeadTooLarge  # httptools stops parsing; uvicorn calls send_400_response, answered below

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._send_431()
            else:
                super().send_400_response(msg)

        def _send_431(self) -> None:
            self._cancel_head_timer()
            message = f"request headers larger than the server's limit of {self.max_head_bytes} bytes"
            body = json.dumps(error_content(431, message, code="headers_too_large")).encode("utf-8")
            head = (
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()


def uvicorn_config(app: Any, config: ServeConfig, *, host: str, port: int, **options: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` with the limits of ``config``; ``options`` go to uvicorn as they are."""
    import uvicorn

    http: Any = "h11"
    if HttpToolsProtocol is not None:
        http = type(
            "LimitedHttpToolsProtocol",
            (LimitedHttpToolsProtocol,),
            {"max_head_bytes": config.max_header_bytes, "head_timeout_s": config.header_timeout_s},
        )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        h11_max_incomplete_event_size=config.max_header_bytes,  # the same limit when h11 parses
        timeout_keep_alive=config.keep_alive_s,
        **options,
    )

