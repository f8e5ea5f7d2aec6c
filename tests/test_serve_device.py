"""Issue 16, item 6: ``--device`` / ``--precision`` — the served model on a GPU when there is one, under autocast.

No GPU here: the CUDA choice is checked by what torch reports (patched), and a half-precision server
by bfloat16 autocast on the CPU, whose vectors must equal local ``encode`` at that precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from embedforge.encode import encode  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "A recipe for lemon cake."]


def test_auto_device_is_the_gpu_only_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ServeConfig().model_device() == "cuda"
    assert ServeConfig(device="cuda:1").model_device() == "cuda:1"  # an explicit device is kept as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ServeConfig().model_device() == "cpu"
    assert ServeConfig(device="cpu").model_device() == "cpu"
    with pytest.raises(InputError, match="torch sees no CUDA GPU"):  # asked for a GPU that is not there
        ServeConfig(device="cuda").model_device()


def test_auto_precision_is_half_on_a_gpu_and_float32_on_a_cpu() -> None:
    assert ServeConfig().model_precision("cuda") == "float16"
    assert ServeConfig().model_precision("cuda:0") == "float16"
    assert ServeConfig().model_precision("cpu") == "float32"
    assert ServeConfig(precision="bfloat16").model_precision("cuda") == "bfloat16"
    assert ServeConfig(precision="float32").model_precision("cuda") == "float32"


@pytest.mark.parametrize("changes", [{"device": "gpu"}, {"device": "cuda:x"}, {"device": ""}, {"precision": "fp8"}])
def test_a_bad_device_or_precision_is_one_clear_error(changes: dict[str, str]) -> None:
    with pytest.raises(InputError, match="device must be|precision must be"):
        ServeConfig(**changes)


def test_cli_device_and_precision_reach_the_config() -> None:
    from embedforge.cli import build_parser
    from embedforge.cli.serve import config_from_args

    args = build_parser().parse_args(["serve", "--model", "m", "--device", "cuda:1", "--precision", "bfloat16"])
    config = config_from_args(args)
    assert (config.device, config.precision) == ("cuda:1", "bfloat16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", "m", "--precision", "fp8"])


def test_the_model_is_loaded_on_the_configured_device(tiny_model_dir: Path) -> None:
    app = create_app(ServeConfig(model=str(tiny_model_dir), device="cpu", workers=1))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        assert str(app.state.service.model.device) == "cpu"


def test_a_bfloat16_server_returns_the_vectors_of_a_bfloat16_encode(tiny_model: Any, tiny_model_dir: Path) -> None:
    expected = encode(tiny_model, TEXTS, precision="bfloat16")
    full = encode(tiny_model, TEXTS)
    config = ServeConfig(model=str(tiny_model_dir), device="cpu", precision="bfloat16", workers=2)
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": TEXTS})
        assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # the server ran the same autocast as encode
    assert not np.allclose(got, full, atol=1e-6)  # ... which is not float32
    assert (np.sum(got * full, axis=1) > 0.98).all()  # and close to it


def test_serve_with_a_missing_gpu_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from embedforge.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["serve", "--model", "minilm", "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA GPU" in err[0]
