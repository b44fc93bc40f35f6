"""Checkpoint formats and the conversion engine, knowing no model.

``errors`` (one hierarchy, ``FormatError`` at its root), ``safetensors`` (a reader and a
streaming writer), ``torch_pickle`` (``torch.save`` files read without torch and without
executing anything), ``tensors`` (torch tensors or arrays to NumPy under an explicit dtype
policy) and ``namemap`` (the one engine that moves tensors between a reference state dict and
our parameter paths, fed by each family's table in ``xlstm_jax.models.<family>.convert``).

Nothing here imports a model, Flax or JAX: the families import this package, never the
reverse.
"""
