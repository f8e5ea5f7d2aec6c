"""``embedforge serve``: the OpenAI-compatible API, search, rerank and the web page."""

from __future__ import annotations

import argparse
import os

from embedforge.errors import InputError
from embedforge.serve.config import (
    MAX_AUTO_THREADS,
    MAX_AUTO_WORKERS,
    PRECISIONS,
    ServeConfig,
    default_torch_threads,
)

__all__ = ["register", "config_from_args"]

_DEFAULTS = ServeConfig()
API_KEY_ENV = "EMBEDFORGE_API_KEY"  # comma-separated keys; keeps them out of the process list (`ps`)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="serve a model behind an OpenAI-compatible embeddings API (plus search, rerank, a web page)",
        description=(
            "Serve MODEL at http://HOST:PORT/v1 so OpenAI clients switch by changing their base URL. "
            "Endpoints: /v1/embeddings, /v1/models, /v1/search, /v1/rerank, /v1/similarity, /health, /metrics, "
            "and a search page at /."
        ),
    )
    p.add_argument("--model", required=True, help="model name or directory ('minilm' = the bundled default)")
    p.add_argument("--collection", metavar="DIR", help="a collection directory to search (/v1/search and the page)")
    p.add_argument(
        "--image-root",
        metavar="DIR",
        help="let image inputs (\"modality\": \"image\") name files inside DIR by path (symlinks resolved, "
        "nothing outside DIR); default: images only as data URIs",
    )
    p.add_argument("--reranker", metavar="DIR", action="append",
                   help="a sentence-transformers CrossEncoder directory, or an embedding model directory or bundled name (its "
                        "cosine re-scores), for /v1/rerank and /v1/search rerank; repeat to fuse several in /v1/search "
                        "(with --rerank-weights, as `embedforge search --rerank A --rerank B`; /v1/rerank uses the first); "
                        "or 'prf' (Rocchio feedback with the collection's own vectors, prf:K,BETA; /v1/search only)")
    p.add_argument("--force-reranker", "--force", dest="force_reranker", action="store_true",
                   help="serve --reranker even when train-reranker saved it as not recommended (it did not beat the first stage)")
    p.add_argument("--rerank-depth", type=int, metavar="N", default=_DEFAULTS.rerank_depth,
                   help="/v1/search with \"rerank\": first-stage candidates re-scored per query (default: %(default)s)")
    p.add_argument("--rerank-weights", metavar="W0,W1[,W2...]",
                   help="/v1/search with \"rerank\": fuse instead of replace: min-max score fusion of the first stage "
                        "(W0) and each --reranker (W1, W2, ...) over the re-scored candidates, as `embedforge search "
                        "--rerank-weights` (default with one --reranker: its order replaces the first stage's)")
    p.add_argument("--rerank-max-length", type=int, metavar="N",
                   help="max tokens each --reranker reads (a cross-encoder: query + document; an embedding model: each "
                        "document), at most the model's own limit (its default); as `embedforge search --rerank-max-length`, "
                        "for /v1/search and /v1/rerank")
    p.add_argument("--host", default=_DEFAULTS.host, help="interface to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=_DEFAULTS.port, help="port (default: %(default)s)")
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every route but /health; repeat for several keys; "
        "default: $EMBEDFORGE_API_KEY (comma-separated) if set, else no key. Prefer the variable: "
        "a key on the command line is visible to every user of the machine (ps)",
    )
    p.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="comma-separated Host names the server answers to, e.g. 'api.example.com,*.example.com' "
        "(others get 400; guards against DNS rebinding); default: any",
    )
    p.add_argument(
        "--model-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="another model name to accept, e.g. text-embedding-3-small so client code needs no change; repeatable",
    )
    p.add_argument("--max-batch-size", type=int, metavar="N", default=_DEFAULTS.max_batch_size, help="texts per forward pass (default: %(default)s)")
    p.add_argument(
        "--max-wait-ms",
        metavar="MS",
        type=float,
        default=_DEFAULTS.max_wait_ms,
        help="longest a request waits for others to batch with; never under light load, and only until as many "
        "requests as the last batch held have come (default: %(default)s)",
    )
    p.add_argument("--no-batching", action="store_true", help="encode each request on its own (for comparison)")
    p.add_argument(
        "--torch-threads",
        type=int,
        metavar="N",
        help="torch threads per worker (default: the usable cores minus one, shared among the workers, "
        f"1 to {MAX_AUTO_THREADS}: {default_torch_threads(_DEFAULTS.workers)} here with {_DEFAULTS.workers} worker(s); a torch team "
        "as wide as the machine stalls on a busy one); 0: torch's own choice, one per core",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=_DEFAULTS.workers,
        help="inference threads, each with its own batcher and model replica (weights shared) "
        f"(default: one per usable core, 1 to {MAX_AUTO_WORKERS}: %(default)s here)",
    )
    p.add_argument(
        "--device",
        default=_DEFAULTS.device,
        metavar="DEVICE",
        help="where the model runs: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; "
        "compressed ONNX/OpenVINO models run their PyTorch weights on a GPU (default: %(default)s)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_DEFAULTS.precision,
        help="forward passes under autocast: auto is float16 on a GPU and float32 on the CPU (default: %(default)s)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        metavar="N",
        default=_DEFAULTS.max_batch_tokens,
        help="padded tokens (texts x longest) per forward pass; long texts get passes of their own "
        "instead of slowing short ones (default: %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        metavar="N",
        default=_DEFAULTS.max_queue,
        help="texts waiting per worker before requests are refused with 503 + Retry-After (default: %(default)s)",
    )
    p.add_argument("--max-inputs", type=int, metavar="N", default=_DEFAULTS.max_inputs, help="texts per request (default: %(default)s)")
    p.add_argument(
        "--max-text-chars", type=int, metavar="N", default=_DEFAULTS.max_text_chars, help="characters per text (default: %(default)s)"
    )
    p.add_argument("--max-images", type=int, metavar="N", default=_DEFAULTS.max_images,
                   help="images per request (default: %(default)s)")
    p.add_argument("--max-image-bytes", type=int, metavar="N", default=_DEFAULTS.max_image_bytes,
                   help="largest image file or decoded data URI, in bytes (default: %(default)s)")
    p.add_argument(
        "--no-search-batching", action="store_true", help="search each /v1/search request on its own (for comparison)"
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        metavar="N",
        default=_DEFAULTS.max_header_bytes,
        help="largest request head (request line + headers); larger: 431 (default: %(default)s)",
    )
    p.add_argument(
        "--keep-alive",
        type=int,
        metavar="S",
        default=_DEFAULTS.keep_alive_s,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    keys = args.api_key or _split(os.environ.get(API_KEY_ENV, ""))
    return ServeConfig(
        model=args.model,
        collection=args.collection,
        reranker=args.reranker[0] if args.reranker else None,
        more_rerankers=tuple(args.reranker[1:]) if args.reranker else (),
        rerank_depth=args.rerank_depth,
        rerank_weights=_rerank_weights(args),
        rerank_max_length=args.rerank_max_length,
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        model_aliases=tuple(args.model_alias),
        batching=not args.no_batching,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_inputs=args.max_inputs,
        max_text_chars=args.max_text_chars,
        torch_threads=args.torch_threads,
        workers=args.workers,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue,
        search_batching=not args.no_search_batching,
        allowed_hosts=tuple(_split(args.allowed_hosts or "")),
        max_header_bytes=args.max_header_bytes,
        keep_alive_s=args.keep_alive,
        image_root=args.image_root,
        max_images=args.max_images,
        max_image_bytes=args.max_image_bytes,
        device=args.device,
        precision=args.precision,
    )


def _rerank_weights(args: argparse.Namespace) -> tuple[float, ...] | None:
    """``--rerank-weights W0,W1,...`` checked (the first stage's weight, then one per --reranker); None when not given."""
    from embedforge.fusion import weights_from_flags

    weights = weights_from_flags(args.rerank_weights, len(args.reranker or []), "--reranker")
    return None if weights is None else tuple(weights)


def _split(value: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from embedforge.models import BUNDLED_MODELS

    rerankers = [r for r in (config.reranker, *config.more_rerankers) if r is not None]
    from embedforge.rerank.feedback import parse_feedback

    reranker_dirs = [r for r in rerankers if r not in BUNDLED_MODELS and parse_feedback(r) is None]  # a bundled model or prf by name is fine
    for name, path in (("--collection", config.collection), *(("--reranker", r) for r in reranker_dirs),
                       ("--image-root", config.image_root)):
        if path is not None and not os.path.isdir(path):
            raise InputError(f"{name}: no such directory", path)
    config.model_device()  # --device cuda without a GPU: one line, exit 2, before anything loads
    from embedforge.rerank.model import not_recommended_reason

    for reranker in rerankers:
        reason = not_recommended_reason(reranker)
        if reason and not getattr(args, "force_reranker", False):
            raise InputError(f"--reranker is not recommended ({reason}); pass --force-reranker to serve it anyway", reranker)
    try:
        from embedforge.serve.server import serve
    except ImportError as err:
        raise InputError(f"serve needs the serve extra: pip install 'embedforge[serve]' ({err})") from err
    serve(config, log_level="info" if getattr(args, "verbose", False) else "warning")
    return 0
