"""Named training configs: ``configs/NAME.py`` defines ``get_config() -> ExperimentConfig``.

``python -m train.main --config NAME`` resolves NAME (``train.config.named``). Configs
import only the config schemas (``train.config`` and each family's
``xlstm_jax.models.<family>.config``). The recipes follow the xLSTM paper (Beck et al.
2024); see ``docs/training.md`` and ``docs/synthetic.md``.
"""
