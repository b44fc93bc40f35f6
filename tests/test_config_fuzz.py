"""The readers of JSON and YAML configs against hostile files: a run's ``config.json``
(``load_run``, the workdir check, ``write_config``, ``train.forecast``'s family probe) and a
pretrained folder's ``config.json`` / ``config.yaml`` / ``model.safetensors.index.json``
(``load_pretrained``). Random truncations, bit flips, bytes that are not UTF-8, and values
of the wrong type, size or shape put at a random key must each end in the project's error
(``ConfigError`` / ``PretrainedError``) naming the file, never another exception or a hang.

``XLSTM_JAX_FUZZ_COUNT`` mutations per file (40 by default) from the fixed seed
``XLSTM_JAX_FUZZ_SEED``; set them to search for more.
"""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from helpers import FUZZ_COUNT, FUZZ_SEED, deadline, mutate_bytes, mutate_json, put_json

from train.config.named import load as named_config
from train.config.overrides import from_dict, to_dict
from train.config.schema import ConfigError, ExperimentConfig
from train.loop.restore import write_config
from train.runs.load import load_run
from train.runs.workdir import WorkdirError, WorkdirLock, check_workdir
from xlstm_jax.formats.errors import PretrainedError
from xlstm_jax.layers.config import check_value
from xlstm_jax.models.xlstm_large.config import xLSTMLargeConfig

pytestmark = pytest.mark.one_jax

# --- a run's config.json ------------------------------------------------------------------


def test_fuzz_run_config(tmp_path):
    """Every damaged ``config.json`` ends in one ``ConfigError`` naming the run's folder; the
    workdir check, the config rewrite and the forecast command's probe never crash."""
    from train.forecast import _run_family

    valid = to_dict(named_config("xlstm_tiny"))
    rng = random.Random(FUZZ_SEED)
    workdir = tmp_path / "run"
    workdir.mkdir()
    outcome = {"refused": 0, "read": 0}
    for _ in range(FUZZ_COUNT):
        data = mutate_json(rng, valid)
        (workdir / "config.json").write_bytes(data)
        with deadline(10):
            with pytest.raises(ConfigError) as info:
                load_run(workdir)
            with contextlib.suppress(WorkdirError):  # the project's error: fine
                check_workdir(workdir)
            _run_family(workdir)
            write_config(named_config("xlstm_tiny"), workdir, lambda m: None)
        message = str(info.value)
        assert str(workdir) in message and "\n" not in message, message
        outcome["read" if "holds no checkpoint" in message else "refused"] += 1
    assert outcome["refused"] > 0


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("train", [1, 2], "train must be a section"),
        ("model", "xlstm", 'no "model" section'),
        ("train.steps", "300", "train.steps must be an integer"),
        ("train.steps", 2**70, "out of range"),
        ("optimizer.lr", float("nan"), "NaN is not a JSON number"),
        ("data.train_lengths", 5, "data.train_lengths must be a list"),
        ("data.train_lengths", ["a", "b"], r"data.train_lengths\[0\] must be an integer"),
        ("logging.plot", "yes", "logging.plot must be true or false"),
        ("model.num_blocks", None, "model.num_blocks must be an integer"),
        ("model.num_blocks", 2**62, "num_blocks must be in"),
        ("model.mlstm_block", [], "model.mlstm_block must be"),
        ("model.mlstm_block.mlstm.form", "fast", "model.mlstm_block.mlstm.form must be"),
        ("model.family", ["xlstm"], "not a model family"),
        ("mesh.rules", {"a": 1}, "mesh.rules must be a list"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_key(tmp_path, key, value, match):
    """Found by probing: a list for a section, a string for a number, a huge integer ended
    in AttributeError, TypeError or OverflowError tracebacks (or was taken as it was)."""
    tree = to_dict(named_config("xlstm_tiny"))
    (tmp_path / "config.json").write_text(json.dumps(put_json(tree, tuple(key.split(".")), value)))
    with deadline(10), pytest.raises(ConfigError, match=match) as info:
        load_run(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value) or "model" in match


def test_from_dict_round_trips_every_named_config():
    from train.config.named import available

    for name in available():
        cfg = named_config(name)
        assert from_dict(ExperimentConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg, name


def test_a_lock_file_of_another_program_is_taken_over(tmp_path):
    """Found by probing: a .lock holding a JSON list (not a holder record) raised
    AttributeError when the lock was taken."""
    (tmp_path / ".lock").write_text("[1, 2]")
    lock = WorkdirLock(tmp_path)
    assert lock.took_over is None
    lock.release()


def test_check_value_types():
    assert check_value([1, 2], tuple[int, ...], "k") == (1, 2)
    assert check_value(3, float, "k") == 3.0 and isinstance(check_value(3, float, "k"), float)
    for value, tp in [(True, int), (1, bool), (2**63, int), (10**400, float), ("a", float)]:
        with pytest.raises(ConfigError, match="^k"):
            check_value(value, tp, "k")


# --- a pretrained folder's config.json, config.yaml and index -----------------------------

_LARGE = {
    "model_type": "xlstm",
    "embedding_dim": 64,
    "num_heads": 2,
    "num_blocks": 2,
    "vocab_size": 128,
    "use_bias": False,
    "norm_eps": 1e-6,
    "qk_dim_factor": 0.5,
    "v_dim_factor": 1.0,
    "gate_soft_cap": 15.0,
    "output_logit_soft_cap": None,
    "chunk_size": 16,
    "tie_word_embeddings": False,
    "mode": "inference",
}


def _pretrained_outcome(folder) -> str:
    """Reads ``folder``'s config as ``load_pretrained`` does (its weights are absent, so a
    config that reads is then refused for them); returns what happened."""
    from xlstm_jax import load_pretrained
    from xlstm_jax.models.xlstm_large.checkpoint import _read_config

    with deadline(10):
        try:
            d, path = _read_config(folder)
        except PretrainedError as err:
            assert str(folder) in str(err) and "\n" not in str(err), err
            return "refused"
        with contextlib.suppress(ConfigError):  # the project's error: fine
            xLSTMLargeConfig.from_dict({k: v for k, v in d.items() if k != "model_type"})
        with pytest.raises(PretrainedError, match="no weights") as info:
            load_pretrained(folder)
        assert str(folder) in str(info.value)
    return "read"


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_fuzz_pretrained_config(tmp_path, kind):
    yaml = pytest.importorskip("yaml") if kind == "yaml" else None
    rng = random.Random(FUZZ_SEED)
    outcome = {"refused": 0, "read": 0}
    for i in range(FUZZ_COUNT):
        folder = tmp_path / str(i)
        folder.mkdir()
        data = mutate_json(rng, _LARGE)
        if kind == "yaml":  # the same damage, as YAML text (JSON is YAML) or YAML's own
            name = "config.yaml"
            if rng.random() < 0.5:
                data = mutate_bytes(rng, yaml.safe_dump(_LARGE).encode())
        else:
            name = "config.json"
        (folder / name).write_bytes(data)
        outcome[_pretrained_outcome(folder)] += 1
    assert outcome["refused"] > 0


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: [" * 5000, "not valid YAML"),
        ("1: 2\nembedding_dim: 3", "not text"),
        ("embedding_dim: 2001-01-01", "must be an integer"),
        ("&a [*a]", "not a mapping"),
        ("embedding_dim: !!python/object:os.system x", "not valid YAML"),
    ],
    ids=["deep", "int_key", "date", "recursive", "python_tag"],
)
def test_a_crafted_config_yaml_is_refused(tmp_path, text, match):
    pytest.importorskip("yaml")
    (tmp_path / "config.yaml").write_text(text)
    from xlstm_jax.models.xlstm_large.checkpoint import _read_config

    with pytest.raises((PretrainedError, ConfigError), match=match):
        d, _ = _read_config(tmp_path)
        xLSTMLargeConfig.from_dict(d)


def test_fuzz_safetensors_index(tmp_path):
    """A damaged index ends in ``PretrainedError`` naming it (or its folder); a shard name
    that leaves the folder is never opened."""
    from xlstm_jax import load_pretrained

    index = {
        "metadata": {"total_size": 10},
        "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b": "x.safetensors"},
    }
    rng = random.Random(FUZZ_SEED)
    for i in range(FUZZ_COUNT):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(_LARGE))
        (folder / "model.safetensors.index.json").write_bytes(mutate_json(rng, index))
        with deadline(10), pytest.raises(PretrainedError) as info:
            load_pretrained(folder)
        assert str(folder) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "shard",
    ["../model.safetensors", "/etc/model.safetensors", "a\0.safetensors", "sub/x.safetensors"],
)
def test_an_index_naming_a_file_outside_the_folder_is_refused(tmp_path, shard):
    from xlstm_jax import load_pretrained

    (tmp_path / "config.json").write_text(json.dumps(_LARGE))
    index = {"weight_map": {"a": shard}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError, match="not a .safetensors file in this folder"):
        load_pretrained(tmp_path)
