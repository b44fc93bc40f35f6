"""sLSTM recurrence as Pallas GPU kernels (Triton lowering), forward and backward.

Implements the op specified by ``pallas_kernels.slstm.reference`` (read its docstring for
the equations): ``pk.slstm(..., impl="pallas")`` runs it (the table in
``pallas_kernels.dispatch`` names it). This module holds the design, the custom_vjp core and
the public entry; the kernels are in ``triton_forward.py`` and ``triton_backward.py``, the
per-step math they share in ``triton_pointwise.py``, the tiles in ``block_sizes.py``.

Design
------
Forward, grid (batch tiles, heads): one program owns ``batch_tile`` rows of one head and loops
over time with ``fori_loop``, carrying the state (y, c, n, m) in registers. Each step computes

  (1) raw_g = Wx_g,t + b_g + y_{t-1} R_g                  g in (i, f, z, o)
  (2) log f^ = m_{t-1} + log sigma(f~);  m_t = i~ where n_{t-1} == 0 else max(i~, log f^)
  (3) i' = min(e^{i~ - m_t}, 1),  f' = min(e^{log f^ - m_t}, 1)
  (4) c_t = f' c_{t-1} + i' tanh(z~),  n_t = f' n_{t-1} + i',  y_t = sigma(o~) c_t / n_t

The recurrent product (1) is tiled over DH: with T = ``dh_tile`` and NT = DH / T, gate g's
output tile j is ``sum_k dot(y_{t-1}[k], R[g, k, j])`` of (batch_tile, T) x (T, T) dots, in
the compute dtype (gates_x's dtype) with fp32 accumulation. The state stays in NT tiles, so
no in-register slicing or concatenation is needed. When one head's R is small (at most
``r_on_chip_max_bytes``, e.g. DH <= 64) its tiles are loaded once before the time loop and
stay on chip; otherwise (DH = 128, 256: R is 128 KiB / 512 KiB in bf16 per head, more than
one SM holds) the tiles are re-read every step from L2, where all heads' R stay resident.
In that streamed mode the contraction over k is an inner loop that reads y_{t-1} back from
the program's own output (a CTA barrier ends each step), so only 4 tiles of R are live at a
time; fully unrolled, the compiler hoists the 4 NT^2 tile loads and spills registers.

Backward, same grid, time loop in reverse. It needs only the forward's pre-activations raw_t
and the states at t-1, from which it recomputes m_t, f', i', c_t, n_t. With
dh_t = dL/dy_t (external + recurrent) and dc, dn, dm carried from step t+1:

  dc^ = dc + dh sigma(o~) / n_t            dn^ = dn - dh y_t / n_t
  do~ = dh (c_t / n_t) sigma'(o~)          dz~ = dc^ i' (1 - tanh^2 z~)
  g_f = (dc^ c_{t-1} + dn^ n_{t-1}) f'     (0 where the min in (3) clips)
  g_i = (dc^ tanh z~ + dn^) i'             dm^ = dm - g_f - g_i          (3)
  di~ = g_i + [m_t = i~] dm^               dlog f^ = g_f + [m_t != i~] dm^  (2)
  df~ = dlog f^ sigma(-f~),  dm_{t-1} = dlog f^,  dc_{t-1} = dc^ f',  dn_{t-1} = dn^ f'
  dh_{t-1} = dy_{t-1} + draw_t R^T

This differentiates the stabiliser m exactly, as autodiff of the reference does. Where the
state is consistent (c = 0 wherever n = 0, e.g. from zero states) the m terms cancel and the
result equals the "m as a constant" backward of the reference CUDA kernel (y is invariant to
m); but with an initial state that has c != 0 where n == 0 and a clipped f' (3), m_t = i~
carries real gradient, and a cotangent on the returned final m is honoured.

The weight gradients are one large matmul each, done by XLA after the kernel:
dR = sum_{b,t} y_{t-1}^T draw_t and dbias = sum_{b,t} draw_t, so no program accumulates
into shared memory and there is no cross-program reduction.

``function="lstm"`` runs through the same kernels (classic LSTM pointwise update,
c_t = sigma(f~) c + sigma(i~) tanh(z~), y_t = sigma(o~) tanh(c_t)); its n and m pass through.

Padding (done in the wrapper, differentiable): the batch to a multiple of ``batch_tile``
(>= 16, the dot's minimum rows) and DH to a power of two >= 16. A padded unit has zero
gates, bias, recurrent rows/columns and initial state, so its y stays exactly 0 (c stays 0,
n > 0) and the zero rows of R keep it from reaching the real units.

Shape legend: B batch, S sequence, NH heads, DH head dim, G = 4 gates (i, f, z, o).
  gates_x (B, S, G, NH, DH)  recurrent_kernel (NH, DH_in, G, DH_out)  bias (NH, G, DH)
  kernel layouts: R (NH, G, DH_in, DH_out); raw (B, S, G, NH, DH) fp32; states (B, S, NH, DH)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.slstm.block_sizes import DEFAULT_BLOCK_SIZES, BlockSizes
from pallas_kernels.slstm.reference import FUNCTIONS
from pallas_kernels.slstm.triton_backward import core_bwd
from pallas_kernels.slstm.triton_forward import fwd_call
from pallas_kernels.triton import F32, check_dtype, pad_dim


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _slstm_core(gx, r, b, state0, function, interpret, bs):
    """(gx (Bp,S,G,NH,DHp), r (NH,G,DHp,DHp), b (NH,G,DHp), 4 x (Bp,NH,DHp)) -> (y_seq, last)."""
    y_seq, finals, _ = fwd_call(gx, r, b, state0, function, interpret, bs, False)
    return y_seq, _last_state(y_seq[:, -1], finals, state0, function)


def _last_state(y_last, finals, state0, function):
    if function == "slstm":
        return (y_last, *finals)
    return (y_last, finals[0], state0[2], state0[3])  # the LSTM's n, m pass through


def _slstm_core_fwd(gx, r, b, state0, function, interpret, bs):
    y_seq, seqs, raw = fwd_call(gx, r, b, state0, function, interpret, bs, True)
    last = _last_state(y_seq[:, -1], tuple(s[:, -1] for s in seqs), state0, function)
    return (y_seq, last), (raw, r, b, y_seq, seqs, state0)


_slstm_core.defvjp(_slstm_core_fwd, core_bwd)


def slstm_pallas(
    gates_x: jax.Array,
    recurrent_kernel: jax.Array,
    bias: jax.Array,
    state0: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    *,
    function: str = "slstm",
    interpret: bool = False,
    block_sizes: BlockSizes | None = None,
):
    """The sLSTM (or LSTM) recurrence with the Pallas kernels; differentiable (custom_vjp).

    The "pallas" entry of ``slstm`` in ``pallas_kernels.dispatch``; inputs are checked by
    ``pk.slstm``.
    The recurrent matmul y_{t-1} R runs with operands in ``gates_x``'s dtype (bf16: bf16 MMA;
    fp32: full-precision fp32 dots) and fp32 accumulation; all gate and state math is fp32.

    Args:
      gates_x: (B, S, 4, NH, DH) gate inputs W x_t, order (i, f, z, o); bf16, fp16 or fp32.
      recurrent_kernel: (NH, DH_in, 4, DH_out).
      bias: (NH, 4, DH).
      state0: initial (y, c, n, m), each (B, NH, DH).
      function: "slstm" or "lstm".
      interpret: run the kernels in Pallas interpret mode (CPU testing).
      block_sizes: tiling and launch parameters; ``DEFAULT_BLOCK_SIZES`` if None.

    Returns:
      y (B, S, NH, DH) float32, and the final (y, c, n, m), each (B, NH, DH) float32.
    """
    bs = DEFAULT_BLOCK_SIZES if block_sizes is None else block_sizes
    bs.validate()
    check_dtype("sLSTM", "gates_x", gates_x.dtype)
    if function not in FUNCTIONS:
        raise ValueError(f"`function` must be one of {FUNCTIONS}; got {function!r}.")
    B, S, _, NH, DH = gates_x.shape
    Bp = -(-B // bs.batch_tile) * bs.batch_tile
    DHp = pad_dim(DH)
    pb, pd = (0, Bp - B), (0, DHp - DH)
    gx = jnp.pad(gates_x, (pb, (0, 0), (0, 0), (0, 0), pd))
    r = jnp.transpose(recurrent_kernel, (0, 2, 1, 3)).astype(gates_x.dtype)  # (NH, G, DH, DH)
    r = jnp.pad(r, ((0, 0), (0, 0), pd, pd))
    b = jnp.pad(bias.astype(F32), ((0, 0), (0, 0), pd))
    s0 = tuple(jnp.pad(s.astype(F32), (pb, (0, 0), pd)) for s in state0)
    y_seq, last = _slstm_core(gx, r, b, s0, function, interpret, bs)
    return y_seq[:B, :, :, :DH], tuple(s[:B, :, :DH] for s in last)
