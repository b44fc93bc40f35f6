"""Training: the commands, and the packages they are built from.

Commands (``python -m train.NAME``): ``main`` (train from a named config), ``generate``
(sample from a run or a pretrained folder), ``forecast`` (forecast a table of series),
``prepare_data`` (tokenize a corpus once). ``cli`` and ``errors`` are what every command
shares (the parser, one error path, the error types); ``files`` writes files atomically.

Packages, each importing only those listed before it (one exception: a ``synthetic:``
data config asks ``data/synthetic`` whether its task fits, at validation time):
  ``config/``  the run's config: schemas, ``--set`` overrides, ``config.json`` (with the
               model's family tag), configs by name;
  ``data/``    what a run trains on, one folder per domain (``text``, ``synthetic``,
               ``series``), the shared batch, objective, evaluator and source protocols;
  ``runs/``    a run on disk: workdir and lock, checkpoints, metrics, loading a run back;
  ``loop/``    ``train(config, workdir)``: setup, restore, compile, run, finish, hooks.
Models are built by their family (``xlstm_jax.registry``), never by testing config types.
"""
