"""A training run on disk: its folder and lock (``workdir``), checkpoints
(``checkpoint``), metrics and plots (``metrics``), and reading it back (``load``:
``load_run``, ``initial_params``).

    from train.runs.load import load_run
    run = load_run("runs/xlstm_tiny")        # run.model, run.tokenizer, run.step, run.config
"""
