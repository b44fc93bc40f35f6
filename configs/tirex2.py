"""TiRex-2 at its released shape (Podest et al. 2026: E 512, 12 blocks alternating
bi-mLSTM and bi-sLSTM with 4 heads, patch 32, context 2048, future window 320, 9 quantile
levels; 38.4M univariate + 44.1M multivariate parameters), bf16 compute, sized for a GPU.

``--init-from FOLDER`` fine-tunes a TiRex-2 checkpoint folder (``config.json`` +
``model.safetensors``): the run then takes the folder's architecture (this config's
compute dtype, and no dropout: the reference's 0.1 is not run here). From scratch it
trains on the M3 and Tourism training parts (univariate targets) and the fpp3 electricity
tables with covariates (``series:vic_elec``, ``series:epf_fr_be``), each series in 4 rows.
The optimizer and schedule are ours (the reference publishes no training recipe).
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
        dropout=0.0,
        templates=(
            BlockTemplate("mlstm", "bi-mlstm", dropout=0.0, eps=1e-7),
            BlockTemplate("slstm", "bi-slstm", dropout=0.0, eps=1e-7),
        ),
        dtype="bfloat16",
    )
    return ExperimentConfig(
        name="tirex2",
        model=model,
        data=DataConfig(
            path="series:m3+tourism+vic_elec+epf_fr_be",
            seq_len=2048,
            val_fraction=0.05,
            series_rows=4,
        ),
        optimizer=OptimizerConfig(lr=1e-4, weight_decay=0.01, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=500, final_lr_ratio=0.1),
        train=TrainConfig(steps=20000, batch_size=64, eval_every=1000, eval_batches=4),
        checkpoint=CheckpointConfig(every=1000, keep=3),
        logging=LoggingConfig(every=50),
    )
