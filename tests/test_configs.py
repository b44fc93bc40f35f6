"""Shipped configs build abstractly with the expected sizes; ``--set`` overrides."""

from __future__ import annotations

import json

import jax
import pytest
from flax import nnx

from train.config import ConfigError, named
from train.config.overrides import apply_overrides, from_dict, to_dict
from xlstm_jax import xLSTMLargeConfig
from xlstm_jax.registry import family_of

# (low, high) parameter counts. The paper reports 409.3M for its 350M recipe (untied
# head); the other sizes bracket the paper's model sizes for their shapes.
EXPECTED = {
    "xlstm_tiny": (0.4e6, 0.7e6),
    "xlstm_125m": (0.150e9, 0.175e9),
    "xlstm_350m": (409.3e6 * 0.99, 409.3e6 * 1.01),
    "xlstm_350m_10": (409.3e6 * 0.99, 409.3e6 * 1.01),
    "xlstm_760m": (0.80e9, 0.88e9),
    "xlstm_1300m": (1.35e9, 1.50e9),
    # The xLSTM-7B family (configs/_large.py); xlstm_7b is 6.87B (arXiv 2503.13427: "7B").
    "xlstm_large_tiny": (0.9e6, 1.0e6),
    "xlstm_large_165m": (0.160e9, 0.170e9),
    "xlstm_large_1300m": (1.40e9, 1.45e9),
    "xlstm_large_2700m": (2.75e9, 2.80e9),
    "xlstm_7b": (6.86e9, 6.87e9),
    # The synthetic-task models (configs/_synthetic.py): 2 blocks, E 64; MQAR's 8192-token
    # embedding (tied to the head) holds most of their parameters.
    "parity_xlstm01": (0.10e6, 0.13e6),
    "parity_xlstm10": (0.05e6, 0.07e6),
    "parity_xlstm11": (0.08e6, 0.10e6),
    "llama_parity": (0.09e6, 0.12e6),
    "mqar_xlstm01": (0.55e6, 0.68e6),
    "mqar_xlstm10": (0.55e6, 0.68e6),
    "mqar_xlstm11": (0.55e6, 0.68e6),
    "llama_mqar": (0.55e6, 0.68e6),
    "llama_mqar_long": (0.55e6, 0.68e6),
    # The forecasters: TiRex's published size is 35M (arXiv 2505.23719).
    "tirex_tiny": (0.83e6, 0.85e6),
    "tirex_35m": (34e6, 36e6),
    # TiRex-2's released shape: 38.4M univariate + 44.1M multivariate (arXiv 2607.01204).
    "tirex2_tiny": (0.26e6, 0.27e6),
    "tirex2": (82.4e6, 82.6e6),
}


def test_every_shipped_config_is_listed_and_tested():
    assert set(named.available()) == set(EXPECTED)


# Sizes and the JSON round trip do not change with the JAX version (building the models on
# the newest JAX is tested with the small configs): once in CI, not again in leg 2.
@pytest.mark.one_jax
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_builds_abstractly_with_expected_size(name):
    cfg = named.load(name)
    model = nnx.eval_shape(lambda: family_of(cfg.model).model(cfg.model, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"{name}: {n:,} parameters")
    low, high = EXPECTED[name]
    assert low <= n <= high, f"{name}: {n:,} not in [{low:,.0f}, {high:,.0f}]"
    # The resolved config is serialisable, and a run's config.json rebuilds it, model
    # family included.
    assert from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("xlstm_tiny", "xlstm"),
        ("xlstm_large_tiny", "xlstm_large"),
        ("llama_parity", "transformer"),
        ("tirex_tiny", "tirex"),
    ],
)
def test_config_json_names_the_model_family_and_is_read_back_by_it(name, family):
    cfg = named.load(name)
    raw = json.loads(json.dumps(to_dict(cfg)))
    assert raw["model"]["family"] == family
    # The tag decides the class, not the fields: the model's own record (a checkpoint's
    # meta) carries no tag.
    assert "family" not in to_dict(cfg.model)
    assert from_dict(type(cfg), raw).model == cfg.model
    # A run written before the tag existed is still read, by its fields.
    del raw["model"]["family"]
    assert from_dict(type(cfg), raw).model == cfg.model


def test_an_unknown_model_family_in_config_json_is_refused_by_name():
    raw = to_dict(named.load("xlstm_tiny"))
    raw["model"]["family"] = "mamba"
    with pytest.raises(ConfigError, match="model.family='mamba' is not a model family"):
        from_dict(type(named.load("xlstm_tiny")), raw)


def test_large_family_overrides_and_7b_shape():
    cfg = named.load("xlstm_7b")
    m = cfg.model
    assert isinstance(m, xLSTMLargeConfig) and cfg.data.seq_len == 8192
    assert (m.embedding_dim, m.num_blocks, m.num_heads, m.vocab_size) == (4096, 32, 8, 50304)
    assert (m.qk_head_dim, m.v_head_dim, m.gate_soft_cap, m.output_logit_soft_cap) == (
        256, 512, 15.0, 30.0
    )  # fmt: skip
    out = apply_overrides(named.load("xlstm_large_tiny"), ["model.num_heads=4",
                                                              "model.impl=xla"])  # fmt: skip
    assert (out.model.num_heads, out.model.qk_head_dim) == (4, 16)
    with pytest.raises(ConfigError, match="num_heads"):
        apply_overrides(named.load("xlstm_large_tiny"), ["model.num_heads=3"])


def test_350m_recipe_matches_the_paper():
    cfg = named.load("xlstm_350m")
    m = cfg.model
    assert (m.embedding_dim, m.num_blocks, m.mlstm_block.mlstm.num_heads) == (1024, 48, 4)
    assert m.slstm_at == (3, 5, 7, 40, 42, 44) and not m.tie_weights
    assert (m.vocab_size, m.dtype, m.param_dtype) == (50304, "bfloat16", "float32")
    assert cfg.data.seq_len == 2048 and cfg.data.tokenizer == "gpt2"
    assert cfg.train.batch_size == 256
    o, s = cfg.optimizer, cfg.schedule
    assert (o.lr, o.b1, o.b2, o.eps, o.weight_decay) == (1e-3, 0.9, 0.95, 1e-5, 0.1)
    assert (s.warmup_steps, s.final_lr_ratio) == (750, 0.1)
    assert not m.weight_decay_on_embedding
    assert named.load("xlstm_350m_10").model.slstm_at == ()


def test_keys_users_reach_for_exist():
    cfg = named.load("xlstm_tiny")
    keys = [
        "train.steps=7",
        "train.batch_size=8",
        "train.micro_batch_size=2",
        "data.seq_len=64",
        "data.path=/some/where",
        "data.tokenizer=gpt2",
        "model.dtype=bfloat16",
        "mesh.data=1",
        "mesh.fsdp=1",
        "mesh.tensor=1",
    ]
    out = apply_overrides(cfg, keys)
    assert (out.train.steps, out.train.micro, out.train.accum_steps) == (7, 2, 4)
    assert (out.data.seq_len, out.data.path, out.data.tokenizer) == (64, "/some/where", "gpt2")
    assert out.model.dtype == "bfloat16"


def test_override_coercion_and_revalidation():
    cfg = named.load("xlstm_tiny")
    out = apply_overrides(
        cfg,
        [
            "model.tie_weights=true",
            "optimizer.lr=2e-4",
            "model.slstm_at=[0, 2]",
            "model.embedding_dim=64",
            "model.slstm_block.feedforward=none",
        ],
    )
    assert out.model.tie_weights is True and out.optimizer.lr == 2e-4
    assert out.model.slstm_at == (0, 2) and out.model.slstm_block.feedforward is None
    # Sub-layer configs follow the new embedding size (the resolved view of each block).
    assert out.model.block_config(1).mlstm.embedding_dim == 64
    assert out.model.block_config(0).slstm.embedding_dim == 64
    assert apply_overrides(cfg, ["model.slstm_at=3"]).model.slstm_at == (3,)
    assert cfg.train.steps == 300  # the original is untouched (frozen)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.stepz=1"], "unknown config key 'train.stepz'; valid keys under 'train': steps"),
        (["nope.x=1"], "valid keys at the top level: model, data"),
        (["model.mlstm_block.mlstm.foo=1"], "under 'model.mlstm_block.mlstm': conv1d_kernel_size"),
        (["train.steps=ten"], "expected int"),
        (["model.tie_weights=maybe"], "expected true or false"),
        (["train=3"], "is a section"),
        (["train.steps"], "expected key=value"),
        (["train.steps=3", "train=none"], "also set one by one"),
        (["train.batch_size=10", "train.micro_batch_size=4"], "multiple of"),
        (["model.mlstm_block.mlstm.num_heads=3"], "must divide"),
        (["model.slstm_at=[9]"], "outside"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(named.load("xlstm_tiny"), overrides)
    assert message in str(e.value)


def test_overrides_of_one_section_apply_together():
    cfg = named.load("xlstm_tiny")  # slstm_at=(1,)
    for order in (
        ["model.num_blocks=1", "model.slstm_at=[]"],
        ["model.slstm_at=[]", "model.num_blocks=1"],
    ):
        out = apply_overrides(cfg, order)
        assert (out.model.num_blocks, out.model.slstm_at) == (1, ())
    assert apply_overrides(cfg, ["train.steps=3", "train.steps=4"]).train.steps == 4


def test_unknown_config_name_lists_the_available_ones():
    with pytest.raises(ConfigError) as e:
        named.load("xlstm_9000m")
    assert "xlstm_tiny" in str(e.value) and "xlstm_350m" in str(e.value)


def test_mesh_resolution():
    cfg = apply_overrides(named.load("xlstm_tiny"), ["mesh.data=-1", "mesh.tensor=2"])
    assert cfg.mesh.resolve(8) == (4, 1, 2)
    with pytest.raises(ConfigError):
        cfg.mesh.resolve(3)
    with pytest.raises(ConfigError, match="at most one"):
        apply_overrides(cfg, ["mesh.fsdp=-1"])


def test_the_trainer_never_names_a_model_config_class_in_code():
    # The trainer asks xlstm_jax.registry about a model; a class named in code (an
    # isinstance ladder, a type comparison, a table keyed by class) would be a second
    # registry to keep in step. Docstrings and messages may name them.
    import ast
    from pathlib import Path

    classes = {"xLSTMLMModelConfig", "xLSTMLargeConfig", "TransformerConfig", "TiRexConfig"}
    found = []
    for path in sorted((Path(__file__).parents[1] / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if isinstance(node, ast.alias):
                name = node.name
            if name in classes:
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert not found, found
