"""What ``embedforge compress`` does, as one frozen dataclass written into the manifest of the result."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CompressConfig", "QUANTIZE"]

QUANTIZE = ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8")  # backends `--quantize` accepts


@dataclass(frozen=True)
class CompressConfig:
    """Layer reduction, PCA, ONNX / OpenVINO export and int8, and static distillation; any that are set run, in that order."""

    layers: int | None = None  # keep this many transformer layers, spread across depth; None keeps all
    dim: int | None = None  # PCA to this many dimensions, stored as a Dense layer; None keeps the dimension
    quantize: str | None = None  # "onnx-int8", "openvino-int8" (or the -fp32 exports); None stays PyTorch
    static: bool = False  # model2vec static embeddings instead of a transformer (no other option applies)
    holdout: float = 0.1  # share of the texts held out for the label-free fidelity numbers
    max_holdout: int = 2000  # at most this many held-out texts (the k-NN overlap is exact, O(n^2))
    min_holdout: int = 21  # at least this many: 10 nearest neighbours out of 20 others is not a foregone match
    knn_k: int = 10  # neighbours compared by the k-NN overlap
    epochs: float = 1.0  # layer distillation: passes over the training texts
    batch_size: int = 32  # layer distillation: texts per step (CPU-friendly)
    learning_rate: float = 1e-4  # layer distillation: the sentence-transformers distillation example's 1e-4
    max_length: int | None = 128  # tokens per text while distilling (faster on CPU); the saved model keeps its own
    static_dim: int = 256  # static: PCA dimension of model2vec's token vectors (the measured 256)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}")
        if self.static and (self.layers is not None or self.quantize is not None):
            raise ValueError("--static replaces the transformer: it does not combine with --layers or --quantize")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be a share between 0 and 1, got {self.holdout}")
        if self.batch_size < 1 or self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError("batch_size, epochs and learning_rate must be positive")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")

    @property
    def method(self) -> list[str]:
        """The steps that run, in order (what the manifest calls the method)."""
        if self.static:
            return ["static"]  # --dim is model2vec's own PCA of the token vectors there
        steps = []
        if self.layers is not None:
            steps.append("layers")
        if self.dim is not None:
            steps.append("pca")
        if self.quantize is not None:
            steps.append(self.quantize)
        return steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
