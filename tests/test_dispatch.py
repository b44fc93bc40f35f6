"""``impl="auto"`` checks a kernel configuration before it first uses it, and falls back to
XLA (one warning, the verdict cached) when the kernel fails; ``impl="pallas"`` raises the
kernel's own error. Simulated on the CPU: a GPU is pretended and the table's Pallas entry
replaced by a failing or wrong stand-in."""

from __future__ import annotations

import collections
import logging
import re
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels as pk
from pallas_kernels import dispatch, selfcheck


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    selfcheck.clear()
    dispatch._logged.clear()
    yield
    selfcheck.clear()
    dispatch._logged.clear()


def _kernel_stand_in(monkeypatch, op, behave):
    """Pretends a CUDA GPU and makes ``behave(xla_fn, *args, **kwargs)`` the op's Pallas
    entry; returns the call counter."""
    calls = collections.Counter()
    xla = dispatch.IMPLEMENTATIONS[op]["xla"]

    def stand_in(*args, interpret=False, **kwargs):
        del interpret
        calls[op] += 1
        return behave(xla, *args, **kwargs)

    table = dict(dispatch.IMPLEMENTATIONS)
    table[op] = MappingProxyType({"xla": xla, "pallas": stand_in})
    monkeypatch.setattr(dispatch, "IMPLEMENTATIONS", MappingProxyType(table))
    monkeypatch.setattr(dispatch, "on_cuda_gpu", lambda: True)
    return calls


def _raises(xla, *args, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: shared memory 300000 > 232448 bytes")


def _wrong(xla, *args, **kwargs):
    h, last = xla(*args, **kwargs)
    return h * 1.01, last


def _nan(xla, *args, **kwargs):
    h, last = xla(*args, **kwargs)
    return h.at[..., 0].set(jnp.nan), last


def _chunkwise_inputs(S=40, DQ=16, DV=32):
    r = np.random.default_rng(0)
    q, k = (jnp.asarray(r.normal(size=(2, 2, S, DQ)), jnp.float32) for _ in range(2))
    v = jnp.asarray(r.normal(size=(2, 2, S, DV)), jnp.float32)
    i = jnp.asarray(r.normal(size=(2, 2, S)), jnp.float32)
    f = jnp.asarray(r.normal(size=(2, 2, S)) + 2.0, jnp.float32)
    return q, k, v, i, f


@pytest.mark.parametrize(
    ("behave", "reason"),
    [(_raises, "RESOURCE_EXHAUSTED"), (_wrong, "differs from XLA"), (_nan, "not finite")],
    ids=["compile-or-resource-error", "wrong-numbers", "nan"],
)
def test_auto_falls_back_to_xla_once_with_one_warning(monkeypatch, caplog, behave, reason):
    calls = _kernel_stand_in(monkeypatch, "mlstm_chunkwise", behave)
    args = _chunkwise_inputs()
    want = pk.mlstm_chunkwise(*args, chunk_size=16, impl="xla")
    with caplog.at_level(logging.WARNING, logger="pallas_kernels"):
        got = pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
        again = jax.jit(lambda *a: pk.mlstm_chunkwise(*a, chunk_size=16, impl="auto"))(*args)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(again, want, rtol=1e-6, atol=1e-6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "mlstm_chunkwise" in message and "chunk 16" in message and "float32" in message
    assert reason in message
    assert calls["mlstm_chunkwise"] == 1  # checked once; the verdict is cached


@pytest.mark.kernel_sweep
def test_a_new_configuration_is_checked_again(monkeypatch):
    calls = _kernel_stand_in(monkeypatch, "mlstm_chunkwise", _raises)
    args = _chunkwise_inputs()
    pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
    pk.mlstm_chunkwise(*args, chunk_size=32, impl="auto")
    pk.mlstm_chunkwise(*_chunkwise_inputs(DQ=64), chunk_size=16, impl="auto")
    assert calls["mlstm_chunkwise"] == 3


def test_explicit_pallas_raises_the_kernels_own_error(monkeypatch):
    calls = _kernel_stand_in(monkeypatch, "mlstm_chunkwise", _raises)
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        pk.mlstm_chunkwise(*_chunkwise_inputs(), chunk_size=16, impl="pallas")
    assert calls["mlstm_chunkwise"] == 1  # no check first: the call itself failed


@pytest.mark.kernel_sweep
def test_step_and_slstm_fall_back_too(monkeypatch, caplog):
    q, k, v, i, f = (x[:, :, 0] for x in _chunkwise_inputs())
    state = pk.mlstm_zero_state(2, 2, 16, 32)
    _kernel_stand_in(monkeypatch, "mlstm_step", _raises)
    r = np.random.default_rng(1)
    gx = jnp.asarray(r.normal(size=(2, 5, 4, 2, 8)), jnp.float32)
    R = jnp.asarray(r.normal(size=(2, 8, 4, 8)) / 3, jnp.float32)
    b = jnp.asarray(r.normal(size=(2, 4, 8)), jnp.float32)
    with caplog.at_level(logging.WARNING, logger="pallas_kernels"):
        h, _ = pk.mlstm_step(q, k, v, i, f, state, impl="auto")
        _kernel_stand_in(monkeypatch, "slstm", lambda xla, *a, **kw: _wrong(xla, *a, **kw))
        y = pk.slstm(gx, R, b, impl="auto")
    np.testing.assert_array_equal(h, pk.mlstm_step(q, k, v, i, f, state, impl="xla")[0])
    np.testing.assert_array_equal(y, pk.slstm(gx, R, b, impl="xla"))
    ops = sorted(r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= 30)
    assert ops == ["pallas_kernels.mlstm_step", "pallas_kernels.slstm"]


@pytest.mark.kernel_sweep
def test_a_kernel_that_passes_its_check_is_used(pallas_interpret):
    """The real kernels (interpret mode, a GPU pretended by the fixture) pass the check,
    and auto then runs them."""
    args = _chunkwise_inputs()
    got = pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
    want = pk.mlstm_chunkwise(*args, chunk_size=16, impl="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert pallas_interpret["mlstm_chunkwise"] == 2  # the check, then the call itself
    assert list(selfcheck._VERDICTS.values()) == [selfcheck.Verdict(True, "matches XLA")]


def _two_kernel_stand_ins(monkeypatch, triton, mosaic):
    """Pretends an sm_90 GPU with a Mosaic-capable JAX, and makes ``triton`` / ``mosaic``
    (``behave`` functions as above) the chunkwise op's "pallas" / "mosaic" entries; returns
    the call counter (keys "pallas", "mosaic")."""
    calls = collections.Counter()
    xla = dispatch.IMPLEMENTATIONS["mlstm_chunkwise"]["xla"]

    def entry(name, behave):
        def run(*args, interpret=False, **kwargs):
            del interpret
            calls[name] += 1
            return behave(xla, *args, **kwargs)

        return run

    table = dict(dispatch.IMPLEMENTATIONS)
    table["mlstm_chunkwise"] = MappingProxyType(
        {"xla": xla, "pallas": entry("pallas", triton), "mosaic": entry("mosaic", mosaic)}
    )
    monkeypatch.setattr(dispatch, "IMPLEMENTATIONS", MappingProxyType(table))
    monkeypatch.setattr(dispatch, "on_cuda_gpu", lambda: True)
    monkeypatch.setattr(dispatch, "on_hopper_or_newer", lambda: True)
    monkeypatch.setattr(dispatch.BACKENDS["mosaic"], "jax_reason", lambda: None)
    return calls


def _exact(xla, *args, **kwargs):
    return xla(*args, **kwargs)


def test_auto_keeps_triton_when_it_passes_and_never_checks_mosaic(monkeypatch):
    calls = _two_kernel_stand_ins(monkeypatch, _exact, _raises)
    pk.mlstm_chunkwise(*_chunkwise_inputs(), chunk_size=16, impl="auto")
    assert calls == {"pallas": 2}  # the check, then the call


def test_auto_tries_mosaic_on_sm90_when_triton_fails_its_check(monkeypatch, caplog):
    calls = _two_kernel_stand_ins(monkeypatch, _raises, _exact)
    args = _chunkwise_inputs()
    with caplog.at_level(logging.INFO, logger="pallas_kernels"):
        got = pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
    np.testing.assert_array_equal(got, pk.mlstm_chunkwise(*args, chunk_size=16, impl="xla"))
    assert calls == {"pallas": 1, "mosaic": 2}  # Triton's check; Mosaic's check and call
    assert "impl='auto' chose the mosaic path" in caplog.text


def test_auto_uses_xla_when_both_kernels_fail_their_checks(monkeypatch, caplog):
    calls = _two_kernel_stand_ins(monkeypatch, _raises, _wrong)
    args = _chunkwise_inputs()
    with caplog.at_level(logging.WARNING, logger="pallas_kernels"):
        got = pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
        pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")  # verdicts cached
    np.testing.assert_array_equal(got, pk.mlstm_chunkwise(*args, chunk_size=16, impl="xla"))
    assert calls == {"pallas": 1, "mosaic": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "Mosaic GPU kernel" in warnings[1]
    assert "differs from XLA" in warnings[1] and "impl='mosaic'" in warnings[1]


def test_auto_never_tries_mosaic_below_sm90(monkeypatch):
    calls = _two_kernel_stand_ins(monkeypatch, _raises, _exact)
    monkeypatch.setattr(dispatch, "on_hopper_or_newer", lambda: False)
    pk.mlstm_chunkwise(*_chunkwise_inputs(), chunk_size=16, impl="auto")
    assert calls == {"pallas": 1}


def test_explicit_mosaic_raises_where_it_cannot_run(monkeypatch):
    args = _chunkwise_inputs()
    with pytest.raises(ValueError, match="impl"):
        pk.mlstm_chunkwise(*args, chunk_size=16, impl="triton")
    with pytest.raises(ValueError, match="no Mosaic GPU kernel"):
        pk.mlstm_step(*(x[:, :, 0] for x in args), pk.mlstm_zero_state(2, 2, 16, 32), impl="mosaic")
    monkeypatch.setattr(dispatch.BACKENDS["mosaic"], "jax_reason", lambda: None)
    monkeypatch.setattr(dispatch, "on_hopper_or_newer", lambda: False)
    with pytest.raises(ValueError, match="compute capability 9.0"):
        pk.mlstm_chunkwise(*args, chunk_size=64, impl="mosaic")
    monkeypatch.setattr(dispatch.BACKENDS["mosaic"], "jax_reason", lambda: "this is JAX 0.0.1")
    with pytest.raises(ValueError, match="this is JAX 0.0.1"):
        pk.mlstm_chunkwise(*args, chunk_size=64, impl="mosaic", interpret=True)


# --- Each backend says whether it supports a call, and the dispatch asks it. ---


def test_the_implementation_names_have_one_source():
    from pallas_kernels import _checks, impls

    assert pk.IMPLS == ("auto", "xla", "pallas", "mosaic")
    assert pk.IMPLS is impls.IMPLS is _checks.IMPLS
    assert set(dispatch.BACKENDS) == set(impls.KERNEL_IMPLS) <= set(pk.IMPLS)
    with pytest.raises(ValueError, match=re.escape(str(pk.IMPLS))):
        pk.mlstm_parallel(*_chunkwise_inputs(), impl="triton")


def test_each_backend_lists_the_ops_of_its_column_of_the_table():
    for impl, backend in dispatch.BACKENDS.items():
        table_ops = {op for op, entries in dispatch.IMPLEMENTATIONS.items() if impl in entries}
        assert set(backend.OPS) == table_ops, impl


def test_on_a_cpu_each_backend_gives_a_one_line_reason_unless_interpreted():
    if dispatch.on_cuda_gpu():
        pytest.skip("this machine has a CUDA GPU")
    machine = {"cuda_gpu": False, "sm90": False}
    for impl, backend in dispatch.BACKENDS.items():
        for op in backend.OPS:
            reason = backend.supports(op, **machine)
            assert isinstance(reason, str) and reason and "\n" not in reason, (impl, op)
            assert dispatch.unsupported_reason(op, impl) == reason
            interpreted = backend.supports(op, interpret=True, **machine)
            want = dispatch.BACKENDS["mosaic"].jax_reason() if impl == "mosaic" else None
            assert interpreted == want, (impl, op)
    # An op a backend has no kernel for: the reason names the ops it has.
    assert "mlstm_chunkwise" in dispatch.BACKENDS["mosaic"].supports("slstm", interpret=True)
    assert "no Pallas kernel" in dispatch.BACKENDS["pallas"].supports("mlstm_parallel")


def test_supports_judges_the_call_facts_it_is_given(monkeypatch):
    triton, mosaic = dispatch.BACKENDS["pallas"], dispatch.BACKENDS["mosaic"]
    monkeypatch.setattr(mosaic, "jax_reason", lambda: None)  # judge the facts on any JAX
    for backend in (triton, mosaic):  # a fact left out is not judged
        assert backend.supports("mlstm_chunkwise") is None
    assert "power of two >= 16" in triton.supports("mlstm_chunkwise", chunk_size=24)
    assert triton.supports("mlstm_chunkwise", chunk_size=32, dtype=jnp.bfloat16) is None
    assert "Use impl='xla'" in triton.supports("slstm", dtype=jnp.int32)
    # float64 runs the mLSTM kernels' exact check in interpret mode only; the sLSTM never.
    assert triton.supports("mlstm_step", dtype=jnp.float64, interpret=True) is None
    assert "float64" in triton.supports("mlstm_step", dtype=jnp.float64)
    assert "float64" in triton.supports("slstm", dtype=jnp.float64, interpret=True)
    assert "64 or 128" in mosaic.supports("mlstm_chunkwise", chunk_size=32)
    wide = mosaic.supports("mlstm_chunkwise", chunk_size=128, head_dim_qk=256)
    assert "Use chunk_size=64" in wide
    assert mosaic.supports("mlstm_chunkwise", chunk_size=128, head_dim_qk=128) is None
    assert "bf16 or fp16" in mosaic.supports("mlstm_chunkwise", dtype=jnp.float32)
    assert mosaic.supports("mlstm_chunkwise", dtype=jnp.float32, interpret=True) is None
    assert "compute capability 9.0" in mosaic.supports("mlstm_chunkwise", sm90=False)
    assert mosaic.supports("mlstm_chunkwise", cuda_gpu=True, sm90=True) is None


def test_an_explicit_kernel_that_cannot_run_raises_the_backends_reason(monkeypatch):
    args = _chunkwise_inputs()
    if not dispatch.on_cuda_gpu():  # the real answers on this CPU, word for word
        for impl in ("pallas", "mosaic"):
            want = dispatch.BACKENDS[impl].supports("mlstm_chunkwise", cuda_gpu=False, sm90=False)
            with pytest.raises(ValueError) as err:
                pk.mlstm_chunkwise(*args, chunk_size=64, impl=impl)
            assert str(err.value) == want
    step = (*(x[:, :, 0] for x in args), pk.mlstm_zero_state(2, 2, 16, 32))
    with pytest.raises(ValueError) as err:
        pk.mlstm_step(*step, impl="mosaic")
    assert str(err.value) == dispatch.BACKENDS["mosaic"].supports("mlstm_step")
    # The dispatch keeps no limits of its own: whatever the backend says is the error.
    for impl in ("pallas", "mosaic"):
        backend = dispatch.BACKENDS[impl]
        monkeypatch.setattr(backend, "supports", lambda op, **facts: f"no {op} today")
        with pytest.raises(ValueError, match="^no mlstm_chunkwise today$"):
            pk.mlstm_chunkwise(*args, chunk_size=64, impl=impl, interpret=True)


def test_auto_skips_a_kernel_its_backend_does_not_support(monkeypatch):
    calls = _kernel_stand_in(monkeypatch, "mlstm_chunkwise", _exact)
    args = _chunkwise_inputs()
    monkeypatch.setattr(dispatch.BACKENDS["pallas"], "supports", lambda op, **facts: "no")
    got = pk.mlstm_chunkwise(*args, chunk_size=16, impl="auto")
    np.testing.assert_array_equal(got, pk.mlstm_chunkwise(*args, chunk_size=16, impl="xla"))
    assert calls["mlstm_chunkwise"] == 0  # not even checked
    assert pk.resolve_impl("mlstm_chunkwise", "auto", False) == "xla"
