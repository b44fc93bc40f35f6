"""The Llama-style Transformer baseline: ``config`` (TransformerConfig), ``model``
(TransformerLM), ``family`` (its registry entry)."""
