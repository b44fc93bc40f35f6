"""The Transformer baseline's config (``TransformerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass

from xlstm_jax.layers.config import DTYPES, MAX_BLOCKS, require, round_up

__all__ = ["TransformerConfig"]


@dataclass(frozen=True)
class TransformerConfig:
    """The Transformer baseline's shape. Field names follow ``xLSTMLMModelConfig`` where they
    mean the same (``embedding_dim``, ``num_blocks``, ``vocab_size``, ``dtype``, ``remat``).

    ``ffn_proj_factor`` sets the SwiGLU hidden size ``F`` (Llama's 8/3, rounded up to a
    multiple of ``ffn_round_to``). ``dropout`` exists for the trainer's checks and must be 0.
    """

    vocab_size: int = -1
    embedding_dim: int = 128
    num_blocks: int = 2
    num_heads: int = 4
    ffn_proj_factor: float = 8 / 3
    ffn_round_to: int = 64
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    # Informational, as for the xLSTM: nothing is sized from it, any S works.
    context_length: int = -1
    tie_weights: bool = False
    weight_decay_on_embedding: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return round_up(self.ffn_proj_factor * self.embedding_dim, self.ffn_round_to)

    def __post_init__(self):
        require(
            self.vocab_size >= 1,
            f"TransformerConfig.vocab_size must be >= 1; got {self.vocab_size}.",
        )
        require(
            1 <= self.num_blocks <= MAX_BLOCKS,
            f"TransformerConfig.num_blocks must be in [1, {MAX_BLOCKS}]; got {self.num_blocks}.",
        )
        require(self.num_heads >= 1, "TransformerConfig.num_heads must be >= 1.")
        require(
            self.embedding_dim % self.num_heads == 0 and self.head_dim % 2 == 0,
            f"TransformerConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim} into an even head dim (rotary positions rotate pairs).",
        )
        require(
            self.ffn_proj_factor > 0 and self.ffn_round_to >= 1,
            "TransformerConfig.ffn_proj_factor must be > 0 and ffn_round_to >= 1.",
        )
        require(self.dtype in DTYPES, f"TransformerConfig.dtype must be one of {DTYPES}.")
        require(
            self.param_dtype in DTYPES, f"TransformerConfig.param_dtype must be one of {DTYPES}."
        )
        require(self.dropout == 0.0, "TransformerConfig.dropout is not implemented; set it to 0.")
