"""FLAME hyperparameters as a plain dataclass: a checkpoint stores `asdict(config)` beside its tensors."""

from __future__ import annotations

from dataclasses import dataclass

from flame_core.tokenizer import HashTokenizer

GATINGS: tuple[str, ...] = ("softmax", "laplace", "gaussian")


@dataclass
class FlameConfig:
    """Defaults are small on purpose: benchmarks train many models on 2 CPU cores.

    `text_buckets` is the tokenizer's `n_buckets`; the embedding table has one extra row for padding
    id 0 (a table of `n_buckets + 1` rows also accepts configs that pass the tokenizer's vocab size).
    `text_chunk` tokens are mean-pooled into one text token (1 = one token per word/n-gram id).
    """

    d_model: int = 64
    n_blocks: int = 1
    n_heads: int = 4
    n_experts: int = 8
    top_k: int = 2
    gating: str = "laplace"
    noise: bool = True
    conv_kernel: int = 3
    expert_hidden: int = 128
    dropout: float = 0.1
    ts_ref_points: int = 16
    ts_time_dim: int = 16
    text_buckets: int = 4096
    text_max_tokens: int = 256
    text_chunk: int = 8
    image_patch: int = 4
    balance_coef: float = 0.01
    interaction_coef: float = 0.1

    def __post_init__(self) -> None:
        positive = (
            "d_model",
            "n_blocks",
            "n_heads",
            "n_experts",
            "top_k",
            "conv_kernel",
            "expert_hidden",
            "ts_ref_points",
            "ts_time_dim",
            "text_buckets",
            "text_max_tokens",
            "text_chunk",
            "image_patch",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FlameConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"FlameConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.top_k > self.n_experts:
            raise ValueError(f"FlameConfig.top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        if self.gating not in GATINGS:
            raise ValueError(f"FlameConfig.gating must be one of {GATINGS}, got {self.gating!r}")
        if not isinstance(self.noise, bool):
            raise ValueError(f"FlameConfig.noise must be a bool, got {self.noise!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FlameConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("balance_coef", "interaction_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"FlameConfig.{name} must be a number >= 0, got {value!r}")

    def tokenizer(self) -> HashTokenizer:
        """The text tokenizer this model's embedding table was sized for."""
        return HashTokenizer(n_buckets=self.text_buckets, max_tokens=self.text_max_tokens)
