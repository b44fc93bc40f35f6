"""AdamW with the paper's weight-decay mask, warm-up + cosine schedule, clipping."""

from __future__ import annotations

import jax
import optax

from train.config.schema import OptimizerConfig, ScheduleConfig

__all__ = ["decay_mask", "make_optimizer", "make_schedule", "path_str"]

_EMBEDDING = "token_embedding"


def path_str(path) -> str:
    """Dotted path of a pytree leaf, without the ``.value`` of NNX variables."""
    parts = []
    for k in path:
        if getattr(k, "name", None) == "value":
            continue
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def decay_mask(params, weight_decay_on_embedding: bool = False):
    """Pytree of bools: True where AdamW applies weight decay.

    The reference's grouping (its trained models used it): decay every weight with
    ``ndim >= 2`` (linear kernels, headwise projections, conv kernels, the untied LM head)
    except the token embedding (unless ``weight_decay_on_embedding``) and the sLSTM
    recurrent kernel (the reference selects parameters named ``weight``, which spares
    it); no decay on norms, biases and other 1-D parameters. With tied weights the
    embedding *is* the head and follows the embedding. Biases and norm scales are also
    excluded by name, because the sLSTM gate bias is stored headwise as a 3-D array.
    """

    def rule(path, leaf) -> bool:
        parts = path_str(path).split(".")
        if leaf.ndim < 2 or parts[-1] in ("bias", "recurrent_kernel"):
            return False
        if any("norm" in p for p in parts):
            return False
        if parts[0] == _EMBEDDING:
            return weight_decay_on_embedding
        return True

    return jax.tree_util.tree_map_with_path(rule, params)


def make_schedule(opt: OptimizerConfig, sched: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``opt.lr`` over ``warmup_steps``, then cosine decay to
    ``final_lr_ratio * opt.lr`` at ``decay_steps`` (default: the run's last step)."""
    decay_steps = total_steps if sched.decay_steps == -1 else sched.decay_steps
    warmup = min(sched.warmup_steps, decay_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.lr,
        warmup_steps=warmup,
        # optax counts the warm-up inside decay_steps.
        decay_steps=max(decay_steps, warmup + 1),
        end_value=opt.lr * sched.final_lr_ratio,
    )


def make_optimizer(
    opt: OptimizerConfig, schedule: optax.Schedule, mask
) -> optax.GradientTransformation:
    """Global-norm clipping (if ``grad_clip > 0``) followed by masked AdamW."""
    adamw = optax.adamw(
        learning_rate=schedule,
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=mask,
    )
    if opt.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip), adamw)
    return adamw
