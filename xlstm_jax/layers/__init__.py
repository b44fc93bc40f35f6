"""The pieces every model family is built from (Flax NNX modules and their settings).

``config`` (ConfigError, require, DTYPES, IMPLS, round_up), ``init`` (small, Wang and
linspace initialisers), ``dense`` (Dense, Embedding, LinearHeadwiseExpand), ``norms`` (one
normalisation helper: LayerNorm, MultiHeadLayerNorm, RMSNorm, HeadwiseLayerNorm), ``conv``
(CausalConv1d), ``feedforward`` (the one GatedFeedForward), ``mlstm`` (the mLSTM cell, its
settings and their checks), ``slstm`` (the sLSTM layer and its config), ``stack`` (running
blocks), ``state`` (typed recurrent state), ``sharding`` (logical axes -> mesh).

A family (``xlstm_jax.models.<family>``) imports from here; nothing here imports a family.
"""
