"""Reading a finished (or interrupted) training run back: its config, tokenizer and model.

    run = load_run("runs/xlstm_tiny")
    run.model(tokens)                       # the latest checkpoint's parameters

Only the parameters are read from the checkpoint (not the optimizer state).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from train.config.overrides import read_run_config, to_dict
from train.config.schema import ConfigError, ExperimentConfig
from train.data.text.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from train.runs.checkpoint import Checkpointer
from xlstm_jax.formats.jsonfile import read_json
from xlstm_jax.registry import family_of

__all__ = ["Run", "initial_params", "load_run"]


@dataclass(frozen=True)
class Run:
    """A training run's model (latest checkpoint), tokenizer, checkpoint step and config."""

    model: nnx.Module
    tokenizer: ByteTokenizer | HFTokenizer
    step: int
    config: ExperimentConfig


def load_run(
    workdir: str | Path,
    step: int | None = None,
    say=None,
    task: str | None = None,
    shardings: dict | None = None,
) -> Run:
    """Loads the run in ``workdir`` (a ``python -m train.main`` output folder): its newest
    checkpoint that reads back intact (checksums compared), or checkpoint ``step``.

    Args:
        workdir: the run's folder.
        step: a checkpoint step to load instead of the newest intact one.
        say: where notes on skipped (unreadable) checkpoints go (default: stderr).
        task: the family task the caller needs (``"lm"``, ``"forecast"``), or None for any.
        shardings: parameter path (dot-joined) -> sharding to restore each parameter onto
            (Orbax then reads only this host's devices' slices); default, and for a
            parameter whose shape the sharding does not divide: this process's first
            device.

    Raises:
        ConfigError: the folder is not a run, its config.json is damaged, it holds no
            checkpoint yet (the message says how to make one), or its model is not of
            ``task`` (the message names the command that uses it).
        CheckpointError: no checkpoint (or not ``step``) can be read; nothing is moved.
    """
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(_not_a_run(workdir, "no config.json"))
    fix = (
        f"Rerunning the training command that made the run (python -m train.main --config "
        f"NAME --workdir {workdir}) rewrites it"
    )
    raw = read_json(cfg_path, ConfigError, fix)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError(_not_a_run(workdir, 'its config.json has no "model" section'))
    cfg = read_run_config(cfg_path, fix)
    fam = family_of(cfg.model)
    if task is not None and fam.task != task:
        use = (
            f"python -m train.forecast --model {workdir} --input TABLE --horizon H"
            if fam.task == "forecast"
            else f"python -m train.generate --workdir {workdir} --prompt TEXT"
        )
        what = {"forecast": "a forecaster", "lm": "a language model"}
        raise ConfigError(
            f"{workdir} is a run of {what.get(fam.task, fam.task)} ({fam.name}), not of "
            f"{what.get(task, task)}; use it with {use}."
        )
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(_no_checkpoint(workdir, cfg))
    ckpt = Checkpointer(
        workdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=False, create=False
    )
    steps = ckpt.all_steps()
    if step is not None and steps and step not in steps:
        ckpt.close()
        raise ConfigError(
            f"--step {step}: there is no checkpoint {step} in {workdir / 'checkpoints'}; the "
            f"checkpoints are at steps {', '.join(map(str, steps))}. Give one of them, or leave "
            f"out --step for the newest."
        )
    try:
        build = family_of(cfg.model).model
        abstract = nnx.eval_shape(lambda: build(cfg.model, rngs=nnx.Rngs(0)))
        graphdef, param_state, rest = nnx.split(abstract, nnx.Param, ...)
        # Onto this process's first device, explicitly: under an active mesh (a run being
        # initialised from this one) the abstract leaves would carry that mesh instead.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        by_path = shardings or {}
        target = jax.tree_util.tree_map_with_path(
            lambda p, x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=_onto(by_path.get(_dotted(p)), x.shape, device)
            ),
            nnx.to_pure_dict(param_state),
        )
        restored = ckpt.restore_latest(
            {"params": target},
            to_dict(cfg.model),
            say or (lambda m: print(m, file=sys.stderr)),
            step=step,
        )
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(_no_checkpoint(workdir, cfg))
    found, state, _ = restored
    nnx.replace_by_pure_dict(param_state, state["params"])
    model = nnx.merge(graphdef, param_state, rest)
    return Run(model, load_tokenizer(cfg.data.tokenizer), found, cfg)


def _dotted(path) -> str:
    """A pure dict's key path as a dot-joined parameter path (``blocks.0.kernel``)."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _onto(sharding, shape, device):
    """``sharding`` where it divides ``shape`` (a checkpoint of another config does not:
    its mismatch is reported by the caller), else ``device``."""
    if sharding is None:
        return device
    try:
        sharding.shard_shape(shape)
    except ValueError:
        return device
    return sharding


def _not_a_run(workdir: Path, why: str) -> str:
    """Says what ``workdir`` is instead of a run, and the command that reads it."""
    if workdir.is_dir() and (
        (workdir / "config.yaml").is_file() or any(workdir.glob("*.safetensors"))
    ):
        return (
            f"{workdir} is a pretrained checkpoint folder, not a training run ({why}); "
            f"sample from it with --pretrained {workdir} instead of --workdir."
        )
    if (workdir / "model.ckpt").is_file():
        return (
            f"{workdir} holds a TiRex forecasting checkpoint (model.ckpt), not a language-model "
            f"training run ({why}); forecast with python -m train.forecast --model {workdir}."
        )
    # train.main refuses a folder that holds other things (train.runs.workdir).
    target = "runs/NAME" if workdir.is_dir() and any(workdir.iterdir()) else workdir
    return (
        f"{workdir} is not a training run ({why}); give the --workdir of a train.main run, "
        f"or train one first, e.g. python -m train.main --config xlstm_tiny --workdir {target}"
    )


def _no_checkpoint(workdir: Path, cfg: ExperimentConfig) -> str:
    return (
        f"{workdir / 'checkpoints'} holds no checkpoint yet; train first (rerun "
        f"python -m train.main --config {cfg.name} --workdir {workdir}) and try again."
    )


def initial_params(
    path: str | Path,
    param_state: nnx.State,
    say=None,
    shardings: dict | None = None,
    family=None,
) -> dict:
    """The parameters to fine-tune from, as a pure dict shaped like ``param_state`` (the
    new run's model parameters) in its dtypes, each placed with ``shardings`` (a pure
    dict like it; default one device).

    ``path`` is a ``train.main`` run folder (its newest intact checkpoint, restored by
    Orbax onto the shardings), a checkpoint folder of the xLSTM-7B family (Hugging Face's
    ``config.json`` + safetensors, or the reference's ``config.yaml``;
    ``xlstm_jax.load_pretrained``: each host reads only its devices' slices of each
    tensor), a TiRex checkpoint (a ``model.ckpt`` file or its folder;
    ``xlstm_jax.load_forecaster``: a pickle, read whole, then placed tensor by tensor), or
    a released folder of the run's ``family`` (``Family.folder_config`` says it is one,
    ``Family.load`` reads it: TiRex-2's ``config.json`` + ``model.safetensors``).
    Each tensor goes straight into its shards; no host holds the whole state (but for a
    TiRex pickle, which is small).

    Raises:
        ConfigError: no such folder, or weights that do not fit the run's model (the
            message names the first parameter that differs).
    """
    folder = Path(path)
    by_path = None
    if shardings is not None:
        by_path = {_dotted(p): sh for p, sh in jax.tree_util.tree_leaves_with_path(shardings)}
    tirex_ckpt = folder if folder.is_file() else folder / "model.ckpt"
    if tirex_ckpt.is_file():
        from xlstm_jax import ForecastError, load_forecaster

        try:
            model = load_forecaster(tirex_ckpt, shardings=by_path)
        except ForecastError as err:
            raise ConfigError(f"train.init_from={path}: {err}") from err
        return _fit_params(path, model, param_state, by_path)
    if not folder.is_dir():
        raise ConfigError(f"train.init_from={path}: no such folder.")
    config_json = folder / "config.json"
    is_run = False
    if config_json.is_file():
        try:
            raw = read_json(config_json, ConfigError, "")
        except ConfigError:
            raw = None
        is_run = isinstance(raw, dict) and "model" in raw
    # Read straight into the run's parameter dtype (the 7B in float32 is 28 GB).
    leaf = next(iter(nnx.to_flat_state(param_state)))[1]
    dtype = str(leaf.get_value().dtype)
    if is_run:
        model = load_run(folder, say=say, shardings=by_path).model
    elif _family_folder(family, folder):
        from xlstm_jax.layers.config import ForecastError

        try:
            model = family.load(folder, shardings=by_path, dtype=dtype, param_dtype=dtype)
        except ForecastError as err:
            raise ConfigError(f"train.init_from={path}: {err}") from err
    else:
        from xlstm_jax import PretrainedError, load_pretrained

        try:
            model = load_pretrained(folder, dtype=dtype, param_dtype=dtype, shardings=by_path)
        except PretrainedError as err:
            raise ConfigError(f"train.init_from={path}: {err}") from err
    return _fit_params(path, model, param_state, by_path)


def _family_folder(family, folder: Path) -> bool:
    """Whether ``folder`` is a released checkpoint folder of ``family`` (a ``Family``)."""
    if family is None or family.folder_config is None:
        return False
    from xlstm_jax.layers.config import ForecastError

    try:
        return family.folder_config(folder) is not None
    except ForecastError:
        return True  # its loader names what is wrong with it


def _fit_params(path, model, param_state: nnx.State, shardings: dict | None) -> dict:
    """``model``'s parameters as a pure dict shaped like ``param_state``, in its dtypes
    and ``shardings`` (parameter path -> sharding; the loaders placed them so already)."""
    theirs = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    ours = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(param_state)}
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    if missing or extra:
        raise ConfigError(
            f"train.init_from={path}: its model is not this run's: this run has "
            f"{missing[:3]} it lacks, it has {extra[:3]} this run lacks; make the model config "
            "match the checkpoint (model family, num_blocks, use_bias, ...)."
        )
    for name, var in ours.items():
        if tuple(theirs[name].shape) != tuple(var.shape):
            raise ConfigError(
                f"train.init_from={path}: {name} is {tuple(theirs[name].shape)} there and "
                f"{tuple(var.shape)} here; make the model config match the checkpoint "
                "(embedding_dim, num_heads, vocab_size, ...)."
            )
    import jax.numpy as jnp

    for name, var in ours.items():
        value = jnp.asarray(theirs[name][...], dtype=var.dtype)  # a cast keeps the shards
        sharding = None if shardings is None else shardings.get(name)
        if sharding is not None and not value.sharding.is_equivalent_to(sharding, value.ndim):
            value = jax.device_put(value, sharding)
        var.set_value(value)
    return nnx.to_pure_dict(param_state)
