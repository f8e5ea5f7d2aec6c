"""``embedforge serve``: arguments to config, clear errors, and one real start in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedforge.cli import build_parser, main
from embedforge.serve.config import ServeConfig

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


def test_arguments_become_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedforge.cli.serve import config_from_args

    monkeypatch.delenv("EMBEDFORGE_API_KEY", raising=False)
    args = build_parser().parse_args(
        ["serve", "--model", "minilm", "--api-key", "a", "--api-key", "b", "--no-batching", "--port", "9000",
         "--max-batch-size", "16", "--max-wait-ms", "2", "--model-alias", "text-embedding-3-small"]
    )
    config = config_from_args(args)
    assert config == ServeConfig(
        model="minilm", port=9000, api_keys=("a", "b"), batching=False, max_batch_size=16, max_wait_ms=2.0,
        model_aliases=("text-embedding-3-small",),
    )
    defaults = config_from_args(build_parser().parse_args(["serve", "--model", "minilm"]))
    assert defaults == ServeConfig(model="minilm")
    assert defaults.host == "127.0.0.1" and defaults.port == 8000 and defaults.batching
    monkeypatch.setenv("EMBEDFORGE_API_KEY", "from-env")
    assert config_from_args(build_parser().parse_args(["serve", "--model", "m"])).api_keys == ("from-env",)


def test_bad_config_values_are_input_errors() -> None:
    from embedforge.errors import InputError

    with pytest.raises(InputError, match="max_batch_size"):
        ServeConfig(max_batch_size=0)
    with pytest.raises(InputError, match="API key"):
        ServeConfig(api_keys=("",))


def test_missing_model_or_directory_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert "no such model directory" in err and "Traceback" not in err
    assert main(["serve", "--model", "minilm", "--collection", str(tmp_path / "nope")]) == 2
    assert "--collection: no such directory" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_embedforge_serve_starts_answers_and_stops(tiny_model_dir: Path) -> None:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedforge", "serve", "--model", str(tiny_model_dir), "--port", str(port), "--api-key", "k"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.status_code == 200, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert health.json()["model"] == tiny_model_dir.name
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/embeddings",
            json={"model": tiny_model_dir.name, "input": "hello"},
            headers={"Authorization": "Bearer k"},
            timeout=30,
        )
        assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 32
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    output = proc.stdout.read() if proc.stdout else ""
    assert f"serving {tiny_model_dir}" in output
    assert proc.returncode in (0, 130), output
