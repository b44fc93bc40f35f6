"""One package per model family, each built from ``xlstm_jax.layers``:

* ``xlstm``: the 2024 paper's language model (mLSTM and sLSTM blocks).
* ``xlstm_large``: the xLSTM-7B family (mLSTM-only blocks, SwiGLU, soft caps).
* ``tirex``: the TiRex forecaster (sLSTM blocks over patches, quantile head) and its
  forecast API.
* ``transformer``: the Llama-style Transformer baseline.

Each holds ``config.py`` (its frozen config), its modules, ``family.py`` (its entry in
``xlstm_jax.registry``) and ``convert.py`` (its PyTorch name map and loaders). A family
imports from ``xlstm_jax.layers`` and ``xlstm_jax.formats``, never from another family.
"""
