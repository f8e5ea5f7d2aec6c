"""``embedforge serve``: an OpenAI-compatible embeddings API for your own model, search, rerank, a web page.

Needs the ``serve`` extra (``pip install 'embedforge[serve]'``): FastAPI, uvicorn, prometheus-client.
"""

from __future__ import annotations

from embedforge.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # create_app imports FastAPI; keep `from embedforge.serve import ServeConfig` light.
    if name == "create_app":
        from embedforge.serve.app import create_app

        return create_app
    raise AttributeError(name)
