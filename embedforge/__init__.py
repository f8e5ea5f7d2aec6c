"""embedforge: your own, data-specific sentence-embedding model.

The public API, one import away::

    from embedforge import load_model, encode, Collection, index_corpus, train, adapt, evaluate_sts

``train``, ``adapt`` and ``evaluate_sts`` load PyTorch / SciPy and are imported on first use, so
``import embedforge`` stays fast. ``train`` and ``adapt`` are also the names of their
subpackages: ``embedforge.train`` is the package :mod:`embedforge.train`, and calling it calls
:func:`embedforge.train.train` (likewise ``embedforge.adapt(...)`` is
:func:`embedforge.adapt.adapt`), so both ``embedforge.train(...)`` and
``from embedforge.train import TrainConfig`` work.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from embedforge.collection import Collection
from embedforge.corpus import Document, PairData, read_documents, read_pairs, read_texts
from embedforge.encode import encode
from embedforge.errors import EmbedforgeError, InputError
from embedforge.ingest import index_corpus
from embedforge.models import load_model, read_manifest, resolve_model, save_model

__version__ = "0.1.0"

__all__ = [
    "Collection",
    "Document",
    "EmbedforgeError",
    "InputError",
    "PairData",
    "__version__",
    "adapt",
    "encode",
    "evaluate_sts",
    "index_corpus",
    "load_model",
    "read_documents",
    "read_manifest",
    "read_pairs",
    "read_texts",
    "resolve_model",
    "save_model",
    "train",
]

class _EntryPackage(ModuleType):
    """A subpackage that can be called as its entry-point function of the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _entry_package(name: str, module: ModuleType | None = None) -> ModuleType:
    package = module if module is not None else importlib.import_module(f"{__name__}.{name}")
    if type(package) is ModuleType:
        package.__class__ = _EntryPackage
    return package


def _entry_property(name: str) -> property:
    # a data descriptor on the package's class: it wins over the attribute that the import system
    # sets when the subpackage is imported, so `embedforge.train` is the callable package whatever
    # was imported first (a module-level __getattr__ would only see the first access)
    def get(self: ModuleType) -> ModuleType:
        return _entry_package(name)

    def set(self: ModuleType, module: ModuleType) -> None:
        _entry_package(name, module)

    return property(get, set)


class _Embedforge(ModuleType):
    train = _entry_property("train")
    adapt = _entry_property("adapt")


sys.modules[__name__].__class__ = _Embedforge


def __getattr__(name: str) -> Any:
    """``evaluate_sts``, imported on first use (it loads SciPy)."""
    if name == "evaluate_sts":
        from embedforge.evaluate.sts import evaluate_sts

        return evaluate_sts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
