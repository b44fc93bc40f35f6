"""The TiRex forecaster's config (``TiRexConfig``) and the error of its forecast API."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from xlstm_jax.layers.config import (
    DTYPES,
    IMPLS,
    MAX_BLOCKS,
    ConfigError,
    ForecastError,
    require,
    round_up,
)
from xlstm_jax.layers.slstm import check_slstm_impl

__all__ = ["ForecastError", "TiRexConfig"]

_DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class TiRexConfig:
    """The forecaster's shape (TiRex's field names) and our compute knobs.

    The defaults are TiRex's published model (35M parameters): patch 32, 9 quantile
    levels, E 512, 4 heads, 12 blocks, context 2048. ``ffn_proj_factor`` sizes the SwiGLU
    (``E * factor`` rounded up to a multiple of 64); ``input_ff_dim`` is the hidden width of
    the input and output residual blocks; ``nan_mask_value`` replaces missing values in the
    patch inputs. ``dtype`` is the compute dtype of the projections ("bfloat16" for speed;
    the sLSTM cell, norms and scaling stay float32); ``impl`` picks the sLSTM op
    ("auto": the Pallas kernel on a CUDA GPU); ``remat`` recomputes each block in the
    backward pass.
    """

    input_patch_size: int = 32
    output_patch_size: int = 32
    quantiles: tuple[float, ...] = _DEFAULT_QUANTILES
    embedding_dim: int = 512
    num_heads: int = 4
    num_blocks: int = 12
    ffn_proj_factor: float = 2.6667
    input_ff_dim: int = 2048
    train_ctx_len: int = 2048
    nan_mask_value: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    impl: Literal["auto", "xla", "pallas", "mosaic"] = "auto"
    remat: bool = False

    def __post_init__(self):
        P = self.input_patch_size
        require(P >= 1, f"TiRexConfig.input_patch_size must be >= 1; got {P}.")
        require(
            self.output_patch_size == P,
            "TiRexConfig.output_patch_size must equal input_patch_size (TiRex predicts the "
            f"next input patch); got {self.output_patch_size} and {P}.",
        )
        q = tuple(float(v) for v in self.quantiles)
        object.__setattr__(self, "quantiles", q)
        require(
            len(q) >= 1 and all(0 < v < 1 for v in q) and list(q) == sorted(set(q)),
            f"TiRexConfig.quantiles must be increasing levels in (0, 1); got {q}.",
        )
        require(
            0.5 in q,
            f"TiRexConfig.quantiles must include 0.5 (the point forecast); got {q}.",
        )
        require(self.embedding_dim >= 1, "TiRexConfig.embedding_dim must be >= 1.")
        require(
            self.num_heads >= 1 and self.embedding_dim % self.num_heads == 0,
            f"TiRexConfig.num_heads={self.num_heads} must divide embedding_dim="
            f"{self.embedding_dim}.",
        )
        require(
            1 <= self.num_blocks <= MAX_BLOCKS,
            f"TiRexConfig.num_blocks must be in [1, {MAX_BLOCKS}]; got {self.num_blocks}.",
        )
        require(self.ffn_proj_factor > 0, "TiRexConfig.ffn_proj_factor must be > 0.")
        require(self.input_ff_dim >= 1, "TiRexConfig.input_ff_dim must be >= 1.")
        require(
            self.train_ctx_len >= P and self.train_ctx_len % P == 0,
            f"TiRexConfig.train_ctx_len must be a positive multiple of the patch size {P}; "
            f"got {self.train_ctx_len}.",
        )
        require(self.dtype in DTYPES, f"TiRexConfig.dtype must be one of {DTYPES}.")
        require(self.param_dtype in DTYPES, f"TiRexConfig.param_dtype must be one of {DTYPES}.")
        require(self.impl in IMPLS, f"TiRexConfig.impl must be one of {IMPLS}; got {self.impl!r}.")
        check_slstm_impl("TiRexConfig", self.impl)

    @property
    def patch_size(self) -> int:
        return self.input_patch_size

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU's hidden width: ``E * ffn_proj_factor`` rounded up to 64 (TiRex's)."""
        return round_up(self.embedding_dim * self.ffn_proj_factor, 64, rule="torch")

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @property
    def median_index(self) -> int:
        """The index of the 0.5 level (the point forecast; the config requires it)."""
        return self.quantiles.index(0.5)

    @classmethod
    def from_dict(cls, d: dict) -> TiRexConfig:
        """A config from our field names (a run's ``config.json``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"TiRexConfig: unknown field(s) {unknown}; the fields are {sorted(names)}."
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
