"""Setting a run up: the checks that need the runtime, the data source, and the model with
its optimizer and sharded train state.

Shapes: a accumulation steps, m micro-batch (the batch axes of a step's input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train.config.schema import ConfigError, ExperimentConfig
from train.data.series.windows import PREFIX as SERIES_PREFIX
from train.data.sources import DataSource, open_source
from train.loop.optimizer import decay_mask, make_optimizer, make_schedule
from train.loop.step import state_shardings
from xlstm_jax.layers.sharding import DEFAULT_RULES, ShardingError, make_mesh
from xlstm_jax.registry import family_of

__all__ = [
    "TrainSetup",
    "adopt_init_config",
    "build_state",
    "init_state",
    "memory_first",
    "check_setup",
    "count_params",
    "open_data",
    "put_batch",
]


@dataclasses.dataclass
class TrainSetup:
    """What the phases after setup share.

    Attributes:
        cfg: the run's config (its vocabulary raised to the data's).
        graphdef, param_state, rest: the model's ``nnx.split`` (parameters separate).
        schedule, tx: the learning-rate schedule and the optimizer.
        state: the train state ``{"params", "opt_state"}``, placed on the mesh: None until
            ``train.loop.restore.restore`` fills it (from a checkpoint, from
            ``train.init_from`` or by ``fresh_state``); replaced by every step.
        shardings: the train state's shardings (parameters by their logical axes).
        abstract_state: the train state's shapes, dtypes and shardings
            (``jax.ShapeDtypeStruct`` leaves): what a checkpoint is restored onto.
        fresh_state: ``() -> state``: the random initialisation, created in its shards
            (``init_state``); run only when nothing replaces it.
        batch_sharding: a step's batch (a, m, ...): m split over data x fsdp.
        eval_sharding: an evaluation batch (b, ...): b split over data x fsdp.
        replicated: the step's metrics.
    """

    cfg: ExperimentConfig
    graphdef: Any
    param_state: nnx.State
    rest: Any
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    state: dict | None
    shardings: dict
    abstract_state: dict
    fresh_state: Callable[[], dict]
    batch_sharding: NamedSharding
    eval_sharding: NamedSharding
    replicated: NamedSharding


def adopt_init_config(cfg: ExperimentConfig, say: Callable[[str], None]) -> ExperimentConfig:
    """``cfg`` with the model config of ``train.init_from`` when that is a released
    checkpoint folder of the run's family that carries its own architecture
    (``Family.folder_config``: TiRex-2's ``config.json``); the run's compute knobs and its
    dropout (none) are kept. Said when the model changes. Other runs: ``cfg`` unchanged
    (their weights must fit the run's model).

    Raises:
        ConfigError: the folder's config cannot be read (named).
    """
    fam = family_of(cfg.model)
    init = cfg.train.init_from
    if not init or fam.folder_config is None:
        return cfg
    from xlstm_jax.layers.config import ForecastError

    try:
        model = fam.folder_config(init, like=cfg.model)
    except ForecastError as err:
        raise ConfigError(f"train.init_from={init}: {err}") from err
    if model is None or model == cfg.model:
        return cfg
    say(f"model config from train.init_from={init} (its architecture, this run's compute)")
    return dataclasses.replace(cfg, model=model)


def check_setup(cfg: ExperimentConfig) -> Mesh:
    """Config checks that need the runtime (devices, hosts) or that the loop relies on.

    Returns the device mesh of the run.
    """
    try:
        mesh = make_mesh(cfg.mesh.resolve(jax.device_count()))
    except ShardingError as e:
        raise ConfigError(f"{e} (--set mesh.data=... mesh.fsdp=... mesh.tensor=...)") from e
    sizes = dict(mesh.shape)
    batch_split = sizes["data"] * sizes["fsdp"]
    if cfg.train.micro % batch_split:
        raise ConfigError(
            f"the micro-batch ({cfg.train.micro}) must be divisible by mesh.data x mesh.fsdp "
            f"= {batch_split}: change train.micro_batch_size / train.batch_size or the mesh."
        )
    if cfg.train.batch_size % jax.process_count():
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the "
            f"{jax.process_count()} processes."
        )
    # The step closes over the model's non-parameter state, so a dropout RNG would repeat
    # its masks every step; refuse rather than train silently wrong.
    m = cfg.model
    fam = family_of(m)
    forecaster = fam.task == "forecast"
    if forecaster != cfg.data.path.startswith(SERIES_PREFIX):
        raise ConfigError(
            "the forecaster (a TiRexConfig model) trains on series data (data.path=series:m3, "
            "series:FILE.csv, ...) and the language models on tokens; this run has "
            f"model {type(m).__name__} with data.path={cfg.data.path}: pick a matching pair "
            "(e.g. --config tirex_tiny for forecasting)."
        )
    if cfg.data.series_rows != 1 and not fam.covariates:
        raise ConfigError(
            f"data.series_rows={cfg.data.series_rows}: the {fam.name} model reads one row per "
            "series; series_rows applies to a forecaster with covariates (TiRex-2). Set it to 1."
        )
    slstm = getattr(m, "slstm_block", None)  # the Transformer baseline has none
    ff = slstm.feedforward if slstm is not None else None
    if getattr(m, "dropout", 0.0) > 0 or (ff is not None and ff.dropout > 0):
        raise ConfigError(
            "dropout is not supported by the trainer yet (the paper's recipes use none): "
            "set model.dropout=0 and model.slstm_block.feedforward.dropout=0."
        )
    init = Path(cfg.train.init_from) if cfg.train.init_from else None
    if init is not None and not forecaster and init.is_file():
        what = "a TiRex forecaster checkpoint" if init.suffix == ".ckpt" else "a file"
        raise ConfigError(
            f"train.init_from={init} is {what}, not a language-model checkpoint folder; it "
            "fits only a forecaster config (e.g. --config tirex_tiny). For this model give a "
            "train.main run folder or a checkpoint folder (config.json / config.yaml + "
            "safetensors)."
        )
    if init is not None and not (init.is_dir() or (forecaster and init.is_file())):
        raise ConfigError(
            f"train.init_from={cfg.train.init_from}: no such folder; give a train.main run "
            "folder or a checkpoint folder (config.json / config.yaml + safetensors)."
        )
    if cfg.data.reset_at_document_boundaries:
        why = fam.doc_resets(m)
        if why is not None:
            raise ConfigError(
                f"data.reset_at_document_boundaries does not apply to this {fam.name} model: "
                f"{why}. Unset data.reset_at_document_boundaries or change the model."
            )
        if cfg.data.path.startswith("synthetic:"):
            raise ConfigError(
                "data.reset_at_document_boundaries applies to packed text; synthetic tasks "
                "hold one example per row. Unset it."
            )
    return mesh


def open_data(
    cfg: ExperimentConfig, say: Callable[[str], None]
) -> tuple[ExperimentConfig, DataSource]:
    """The run's data source, and the config with ``model.vocab_size`` raised to what the
    source's ids need (said when it changes).

    Raises:
        DataError: the path or tokenizer cannot be used (before any compute).
    """
    source = open_source(cfg.data, cfg.model)
    if source.vocab_size and cfg.model.vocab_size < source.vocab_size:
        say(
            f"model.vocab_size {cfg.model.vocab_size} -> {source.vocab_size} to fit "
            f"{source.vocab_origin}."
        )
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, vocab_size=source.vocab_size)
        )
    return cfg, source


def count_params(cfg: ExperimentConfig) -> int:
    """The model's parameter count, from its shapes alone (nothing is allocated)."""
    build = family_of(cfg.model).model
    abstract = nnx.eval_shape(lambda: build(cfg.model, rngs=nnx.Rngs(cfg.train.seed)))
    return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def build_state(cfg: ExperimentConfig, mesh: Mesh) -> TrainSetup:
    """The model (built by its family, ``xlstm_jax.registry``), the optimizer and the
    train state, born sharded over ``mesh`` by the logical axes of the parameters.

    No device or host ever holds the whole state: the model is traced abstractly
    (``nnx.eval_shape``) for its structure and shardings, and one jitted function
    (``init_state``) creates every parameter and optimizer leaf straight into its shards
    when ``setup.fresh_state()`` is called. That is left to the restore, so a resumed or
    fine-tuned run never creates the random state it would throw away: ``setup.state`` is
    None here.
    """
    build = family_of(cfg.model).model
    seed = cfg.train.seed

    def make_model() -> nnx.Module:
        return build(cfg.model, rngs=nnx.Rngs(seed))

    graphdef, param_state, _ = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)
    schedule = make_schedule(cfg.optimizer, cfg.schedule, cfg.train.steps)
    tx = make_optimizer(
        cfg.optimizer,
        schedule,
        decay_mask(
            nnx.to_pure_dict(param_state), getattr(cfg.model, "weight_decay_on_embedding", False)
        ),
    )
    init, shardings, abstract = init_state(make_model, param_state, tx, mesh, cfg.mesh.rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    # The model's non-parameter state alone: XLA drops the unused parameters' creation.
    rest = jax.jit(lambda: nnx.split(make_model(), nnx.Param, ...)[2], out_shardings=replicated)()
    return TrainSetup(
        cfg=cfg,
        graphdef=graphdef,
        param_state=param_state,
        rest=rest,
        schedule=schedule,
        tx=tx,
        state=None,
        shardings=shardings,
        abstract_state=abstract,
        fresh_state=lambda: init()[0],
        batch_sharding=NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp"))),
        eval_sharding=NamedSharding(mesh, PartitionSpec(("data", "fsdp"))),
        replicated=replicated,
    )


def init_state(
    make_model: Callable[[], nnx.Module],
    param_state: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules=DEFAULT_RULES,
) -> tuple[jax.stages.Wrapped, dict, dict]:
    """The jitted initialisation of the train state, the state's shardings, and the state
    as ``jax.ShapeDtypeStruct`` leaves carrying them (what a checkpoint is restored onto).

    Args:
        make_model: builds the model with its seeded ``nnx.Rngs`` (traced, never run
            eagerly).
        param_state: the model's parameters, abstract (``nnx.eval_shape``): their logical
            axes give the shardings.
        tx: the optimizer whose state is initialised beside the parameters.
        mesh, rules: the device mesh and the logical-axis rules.

    Returns:
        ``init() -> ({"params", "opt_state"}, rest)``, jitted with the outputs sharded by
        ``shardings`` (parameters by their logical axes, AdamW moments like their
        parameters; ``rest``, the model's non-parameter state, replicated), and the
        ``shardings`` of the ``{"params", "opt_state"}`` state, and that state abstract
        (shapes, dtypes, shardings; traced once, here). The values are
        bit-identical to building the model eagerly with the same seed; with
        ``jax_threefry_partitionable`` (JAX's default) each device draws only its own
        shards' random bits.
    """

    def init():
        _, params, rest = nnx.split(make_model(), nnx.Param, ...)
        params = nnx.to_pure_dict(params)
        return {"params": params, "opt_state": tx.init(params)}, rest

    abstract, _ = jax.eval_shape(init)
    shardings = state_shardings(tx, param_state, abstract["opt_state"], mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    with_shardings = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract, shardings
    )
    jitted = jax.jit(
        init, out_shardings=(shardings, replicated), compiler_options=memory_first(mesh)
    )
    return jitted, shardings, with_shardings


def memory_first(mesh: Mesh) -> dict | None:
    """Compiler options that order a program for the least memory on ``mesh``'s platform.

    XLA:CPU's default scheduler favours concurrency: for the initialisation it computes
    every parameter's random-number counters (``jax.random`` on CPU runs threefry as a
    loop over them) before the loops that consume them, so one device held the
    temporaries of all its shards at once (1.33x the sharded state for ``xlstm_7b`` on 8
    devices; ``benchmarks/init_memory.py``). The memory-optimised scheduler runs them one
    after another (1.00x). Only the CPU has the option; GPU schedulers already bound
    memory. None elsewhere.
    """
    if mesh.devices.flat[0].platform != "cpu":
        return None
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _global_batch(local: np.ndarray, sharding: NamedSharding, global_shape=None) -> jax.Array:
    """The global batch from each process's rows (the batch axis is split across hosts)."""
    return jax.make_array_from_process_local_data(sharding, local, global_shape)


def put_batch(local, sharding: NamedSharding, global_shape=None):
    """The global batch (any pytree of host rows; ``global_shape``: the leaves' leading
    axes, their trailing ones are each leaf's own). The batch axis is split across hosts:
    each process gives its own rows."""
    return jax.tree.map(
        lambda x: _global_batch(
            x, sharding, None if global_shape is None else (*global_shape, *x.shape[2:])
        ),
        local,
    )
