"""TiRex-2's registry entry (``xlstm_jax.registry.family("tirex2")``).

Forecasting is ``xlstm_jax.models.tirex2.forecast.predict``. ``python -m train.main`` trains
it (``configs/tirex2_tiny.py``, ``configs/tirex2.py``) on windows of series with covariates
(``train.data.series.covariates``) with the pinball loss of one pass's future window
(``xlstm_jax.models.tirex2.loss.quantile_loss``), and fine-tunes a checkpoint folder
(``train.init_from``: the run adopts the folder's config, ``folder_config``).
"""

from __future__ import annotations

from xlstm_jax.models.tirex2.config import TiRex2Config
from xlstm_jax.models.tirex2.model import TiRex2
from xlstm_jax.registry import Activations, Family, imported_on_call

__all__ = ["FAMILY"]


def _summary(m: TiRex2Config) -> str:
    kinds = "/".join(dict.fromkeys(t.time_mixer for t in m.blocks))
    return (
        f"TiRex-2 {kinds} + variate attention, patch {m.patch_size}, {len(m.quantiles)} quantiles"
    )


def _activations(m: TiRex2Config, B: int, S: int, c_bytes: int):
    # B rows of S context values and the future window after them, N patches. Per block:
    # the cell run both ways (fp32 states and gates), the SwiGLU's three (B, N, F) tensors,
    # the attention's projections and MLP (4E); the attention scores (N, NH, B, B) are
    # counted as if all rows were one series (a batch's rows are one pass).
    E, N = m.embedding_dim, -(-(S + m.future_len) // m.patch_size)
    per = B * N * (2 * 16 * E * 4 + 10 * E * c_bytes + 3 * m.ffn_dim * c_bytes)
    per += 2 * N * max(t.attention_heads for t in m.blocks) * B * B * 4
    head = 3 * B * N * len(m.quantiles) * m.patch_size * 4
    return Activations([per] * m.num_blocks, B * N * E * c_bytes, head)


FAMILY = Family(
    name="tirex2",
    description="the TiRex-2 forecaster (bidirectional xLSTM time mixers, attention across "
    "variates, covariates)",
    config=TiRex2Config,
    model=TiRex2,
    task="forecast",
    summary=_summary,
    activation_bytes=_activations,
    doc_resets=lambda m: "the forecaster reads one series per row group, with no documents in it",
    from_torch=imported_on_call("xlstm_jax.models.tirex2.convert:from_torch"),
    torch_classes=("TiRex2",),
    load=imported_on_call("xlstm_jax.models.tirex2.convert:load_folder"),
    covariates=True,
    folder_config=imported_on_call("xlstm_jax.models.tirex2.convert:folder_config"),
)
