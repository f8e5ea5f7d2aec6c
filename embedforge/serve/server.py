"""Run the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from embedforge.serve.config import ServeConfig
from embedforge.serve.limits import uvicorn_config

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["serve", "running_server"]

logger = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(config: ServeConfig, *, log_level: str = "info") -> None:
    """Load what ``config`` names, then serve it until interrupted (Ctrl-C stops it cleanly).

    Loading happens before uvicorn starts, so a wrong model or directory is one
    :class:`~embedforge.errors.InputError` line rather than a failed-startup traceback.
    """
    import sys

    import uvicorn

    from embedforge.models import load_model
    from embedforge.serve.app import create_app, load_reranker
    from embedforge.serve.service import open_collection

    model = load_model(config.model)
    collection = open_collection(config.collection) if config.collection else None
    reranker = load_reranker(config.reranker) if config.reranker else None
    more = [load_reranker(r) for r in config.more_rerankers]
    app = create_app(config, model=model, collection=collection, reranker=reranker, more_rerankers=more)
    if config.host not in _LOOPBACK and not config.api_keys:
        logger.warning("listening on %s without an API key: anyone who can reach it can use it", config.host)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"embedforge: serving {config.model} at http://{host}:{config.port}/v1 (web page at /; Ctrl-C stops)", file=sys.stderr)
    uvicorn.Server(uvicorn_config(app, config, host=config.host, port=config.port, log_level=log_level, access_log=False)).run()


@contextlib.contextmanager
def running_server(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 120.0
) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL and always stops it on exit.

    The connection limits are those of the app's :class:`ServeConfig` (``app.state.config``).
    ``port=0`` lets the OS pick a free port (no race between picking and binding).
    """
    import uvicorn

    config = getattr(app.state, "config", None)
    limits = config if isinstance(config, ServeConfig) else ServeConfig()
    server = uvicorn.Server(
        uvicorn_config(app, limits, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="embedforge-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server failed to start (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            raise RuntimeError(f"the server did not start within {startup_timeout:.0f} s")
        time.sleep(0.01)
    try:
        sockets = [sock for srv in server.servers for sock in srv.sockets]
        bound_port = sockets[0].getsockname()[1]
        yield f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
