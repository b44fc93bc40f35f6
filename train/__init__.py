"""Training: configs, data, optimizer, loop and checkpoints (``python -m train.main``)."""
