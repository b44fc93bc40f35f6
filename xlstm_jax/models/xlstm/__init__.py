"""The 2024 paper's xLSTM language model: ``config`` (mLSTMLayerConfig, ...,
xLSTMLMModelConfig), ``blocks`` (mLSTMLayer, mLSTMBlock, sLSTMBlock), ``model``
(xLSTMBlockStack, xLSTMLMModel), ``family`` (its registry entry), ``convert`` (the
reference's state dicts)."""
