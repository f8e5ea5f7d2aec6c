"""The saved progress of an ``adapt`` run: ``OUTPUT.adapt-work/state.json`` + ``scores/*.json``.

Every step writes its result atomically as soon as it is done, so an interrupted run resumes
where it stopped. A fingerprint of the inputs and settings guards against mixing two runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.adapt.choose import ModelScores
from embedforge.errors import InputError
from embedforge.io import write_json

__all__ = ["State", "work_dir", "discard_work", "read_scores", "STATE_FORMAT"]

STATE_FORMAT = "embedforge-adapt-state/1"


def work_dir(output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".adapt-work")


def discard_work(output: str | os.PathLike[str]) -> bool:
    """Delete an earlier run's saved progress for ``output``; True if there was some."""
    work = work_dir(output)
    existed = work.exists()
    shutil.rmtree(work, ignore_errors=True)
    return existed


def read_scores(folder: Path, name: str) -> ModelScores | None:
    """The held-out scores saved for model ``name`` in a work folder (``scores/NAME.json``), or None."""
    file = folder / "scores" / f"{name}.json"
    if not file.is_file():
        return None
    d = json.loads(file.read_text())
    return ModelScores(name, {k: np.asarray(v) for k, v in d["label_free"].items()},
                       None if d["labelled"] is None else np.asarray(d["labelled"]), d["sts"])


class State:
    """``state.json`` + ``scores/*.json`` in the work folder, written atomically after each step."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        file = folder / "state.json"
        self.data: dict[str, Any] = json.loads(file.read_text()) if file.is_file() else {}
        if self.data and self.data.get("fingerprint") != fingerprint:
            raise InputError(
                "holds an earlier adapt run with different inputs or settings; pass --restart to discard it "
                "(or delete the folder)", folder,
            )
        self.data.setdefault("format", STATE_FORMAT)
        self.data["fingerprint"] = fingerprint

    def save(self) -> None:
        write_json(self.folder / "state.json", self.data)

    def scores(self, name: str) -> ModelScores | None:
        return read_scores(self.folder, name)

    def save_scores(self, s: ModelScores) -> None:
        write_json(self.folder / "scores" / f"{s.name}.json", {
            "label_free": {k: v.tolist() for k, v in s.label_free.items()},
            "labelled": None if s.labelled is None else s.labelled.tolist(), "sts": s.sts,
        })
