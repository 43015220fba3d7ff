"""Statistics of the instrumented JAX training step and their host readers.

`JaxTrainHooks` (in `_jax_hooks`, the module that touches Keras's JAX
trainer) calls these methods while its train step is traced: they build the
step's statistics with `keras.ops` as a named structure (a dict) that leaves
the jitted step with its logs:

- every step: `"row"`, one float32 vector (one transfer to the host after
  every step) of the fields `ROW_FIELDS`: the optimizer's iterations before
  the update (as `step // 2**20` and `step % 2**20`, both exact in
  float32), the loss scale (1 without), the learning rate, the loss, then
  each of the optimizer's variables' gradient L2 norm (scaled);
- and the full statistics, computed on full steps only (zeros on the
  others, see `_jax_hooks._Trace.when_full`): `"batch"`, `"grad_max"`
  (per-variable max-abs), `"weights"` and `"updates"` (per-variable norms
  of the weights before the update and of their change), `"activations"`
  (layer index -> `diagnostics.stats.activation_counts`) and `"sample"`
  (layer index -> a strided sample of its gradients, unscaled).

The host readers turn them into the structures of the TensorFlow readers
(`_graph_stats.GraphStats`), judging every step with the same `fold_rows`.
"""

from __future__ import annotations

import math

import jax
import keras
import numpy as np
from keras import ops

from keras_actloss.callbacks._graph_stats import (
    ACTIVATION_FIELDS,
    LABEL_ROWS,
    LAYER_FIELDS,
    LOSS_SCALE_PATIENCE,
    RING_HEAD,
    RING_LOSS,
    RING_LR,
    RING_SCALE,
    RING_STEP,
    RowLayout,
    fold_rows,
    layer_sums,
    sample_positions,
    within_bounds,
)
from keras_actloss.diagnostics import stats

# The every-step part of a step's statistics (a ring row, see `_read_row`).
ROW_FIELDS = ("step_high", "step_low", "scale", "rate", "loss")
_STEP_SPLIT = 2**20
_ROW_SCALE, _ROW_RATE, _ROW_LOSS = 2, 3, 4
_ROW_NORMS = len(ROW_FIELDS)


def _norm(x):
    x = ops.cast(x, "float32")
    return ops.sqrt(ops.sum(ops.square(x)))


class JaxStats:
    """Mixin of `JaxTrainHooks`: the in-trace statistics and host readers.

    Relies on the attributes `JaxTrainHooks` sets: `plans`,
    `histogram_size`, `loss_scaled`, `_grad_layers()`, `_var_sizes()`, and
    the host state `_pending` (each step's statistics, device arrays or
    already read rows, not judged yet), `_last_full`, `_kept` (the last full
    step's batch), `_loss_known` and `_bounds`.
    """

    # ---------------------------------------------------------- in the trace
    def _activation_counts(self, outputs: dict) -> dict:
        """`activation_counts` of the kept outputs (a list per layer: every
        call in the step, a shared layer's uses summed), by layer index
        (str). A layer whose unit count differs between calls is left out."""
        out = {}
        for i, calls in outputs.items():
            calls = [x for x in calls if x.ndim >= 1]
            if not calls:
                continue
            plan = self.plans[i]
            counts = [
                stats.activation_counts(
                    jax.lax.stop_gradient(x), plan.profile, plan.channel_axis % x.ndim
                )
                for x in calls
            ]
            shapes = {k: {tuple(c[k].shape) for c in counts} for k in counts[0]}
            if any(len(v) > 1 for v in shapes.values()):
                continue
            out[str(i)] = {k: sum(c[k] for c in counts) for k in counts[0]}
        return out

    def _statistics(self, trace, extra, data) -> dict:
        """The named statistics of the step (see `_read_row`, `read_full`)."""
        applied = trace.applied
        grads = [ops.cast(g, "float32") for g in applied["grads"]]
        nan = ops.convert_to_tensor(float("nan"), "float32")
        step = applied["step"]
        head = [
            step // _STEP_SPLIT,
            step % _STEP_SPLIT,
            applied["scale"],
            applied["rate"],
            nan if extra is None else extra["loss"],
        ]
        head = ops.stack([ops.cast(v, "float32") for v in head])
        norms = ops.stack([_norm(g) for g in grads])
        before, after = applied["before"], applied["after"]
        first = jax.tree_util.tree_leaves(data)[0]

        def full():
            return dict(
                batch=ops.convert_to_tensor(float(first.shape[0]), "float32"),
                grad_max=ops.stack([ops.max(ops.abs(g)) for g in grads]),
                weights=ops.stack([_norm(w) for w in before]),
                updates=ops.stack(
                    [
                        _norm(ops.cast(a, "float32") - ops.cast(b, "float32"))
                        for a, b in zip(after, before)
                    ]
                ),
                sample=self._samples(grads, applied["scale"]),
            )

        return {
            "row": ops.concatenate([head, norms], 0),
            # Zeros on an every-step check (see `_Trace.when_full`).
            "activations": {} if extra is None else extra["activations"],
            **trace.when_full(full),
        }

    def _samples(self, grads, scale) -> dict:
        """A strided sample of each layer's (unscaled) gradients, by layer
        index (str), from its variables' gradients in variable order."""
        if not self.histogram_size:
            return {}
        layers = self._grad_layers()
        out = {}
        for i in range(len(self.plans)):
            ks = [k for k, layer in enumerate(layers) if layer == i]
            if not ks:
                continue
            sizes = [math.prod(grads[k].shape) for k in ks]
            found = sample_positions(sizes, self.histogram_size)
            pieces = [
                ops.take(ops.reshape(grads[k], [-1]), p.astype("int32"))
                for k, p in zip(ks, found)
            ]
            out[str(i)] = ops.concatenate(pieces, 0) / scale
        return out

    # ------------------------------------------------------------- host side
    def reset_sentinel(self) -> None:
        """Starts judging steps after the ones run so far."""
        self._streak = 0.0
        self._pending = []
        self._last_full = None

    def _fold(self, rows) -> list[tuple]:
        if not rows:
            return []
        layers = self._grad_layers()
        layout = RowLayout(tuple(range(len(layers))), (True,) * len(layers))
        patience = LOSS_SCALE_PATIENCE if self.loss_scaled else None
        out, self._streak = fold_rows(rows, layout, layers, self._streak, patience)
        return out

    def quiet(self) -> bool:
        """Whether the last execution was a single step within the alarm
        bounds: it can wait for `read_quiet` (after the quiet steps before
        it, already read into rows). A full step off the recording schedule
        is judged the same, from its every-step part (on TensorFlow, which
        returns no alarm values from a full step, it is judged at once)."""
        pending = self._pending
        self._last_full = None  # Not a recording: its statistics are not read.
        if not pending:
            return False
        *earlier, out = pending
        if not isinstance(out, dict) or any(isinstance(o, dict) for o in earlier):
            return False
        row = _read_row(np.asarray(out["row"]))
        pending[-1] = row
        return self._within_bounds(row)

    def _within_bounds(self, row) -> bool:
        squares = sum(v * v for v in row[RING_HEAD:])
        total = squares / (row[RING_SCALE] * row[RING_SCALE])
        return within_bounds(total, row[RING_LR], self._bounds)

    def read_quiet(self) -> list[tuple[int, float, float, float]]:
        """`(step, global norm, learning rate, loss)` of the quiet steps not
        read yet, in step order."""
        self._last_full = None
        rows = self._host_rows()
        self._streak = 0.0  # Quiet steps are finite.
        out = []
        for row in rows:
            norm = math.sqrt(sum(v * v for v in row[RING_HEAD:]))
            out.append(
                (
                    int(row[RING_STEP]),
                    norm / row[RING_SCALE],
                    row[RING_LR],
                    row[RING_LOSS],
                )
            )
        return out

    def _host_rows(self) -> list[list[float]]:
        """The every-step rows not read yet, in step order, as host rows
        (`_read_row`; those `quiet` read are rows already); read now."""
        pending, self._pending = self._pending, []
        devices = [out for out in pending if isinstance(out, dict)]
        host = iter(_read_row(o) for o in jax.device_get([d["row"] for d in devices]))
        return [next(host) if isinstance(out, dict) else out for out in pending]

    def set_bounds(self, bounds: tuple[float, float, float, float]) -> None:
        """Sets the alarm bounds (`_graph_stats.BOUND_FIELDS`), checked on
        the host after each quiet step."""
        self._bounds = tuple(float(b) for b in bounds)

    def read_steps(self) -> list[tuple]:
        """Every step run since the last read, judged (see `fold_rows`)."""
        self._last_full = None
        return self._fold(self._host_rows())

    def read_full(self) -> dict | None:
        """The last full-statistics step, as Python values (None = n/a), in
        the structure of `GraphStats.read_full`."""
        full, self._last_full = self._last_full, None
        self._kept_full = full
        if full is None:
            return None
        steps = self._fold(self._host_rows())
        full = jax.device_get({k: v for k, v in full.items() if k != "sample"})
        row = full["row"]
        step, norm, counted, skipped = steps[-1][:4]
        head = {
            "loss": float(row[_ROW_LOSS]) if self._loss_known else None,
            "batch_size": float(full["batch"]),
            "learning_rate": float(row[_ROW_RATE]),
            "step": step,
            "global_norm": norm,
            "non_finite": float(counted),
            "skipped": float(skipped),
            "steps": steps,
        }
        head["layers"] = self._layer_fields(full)
        return head

    def _layer_fields(self, full: dict) -> list[dict]:
        n = len(self.plans)
        layers = self._grad_layers()
        norms = full["row"][_ROW_NORMS:]
        grads = layer_sums(np.square(norms.astype("float64")), layers, n)
        weights = layer_sums(np.square(full["weights"].astype("float64")), layers, n)
        deltas = layer_sums(np.square(full["updates"].astype("float64")), layers, n)
        sizes = self._var_sizes()
        counts = np.maximum(layer_sums(sizes, layers, n), 1)
        scale = float(full["row"][_ROW_SCALE])
        activations = self._activation_fields(full["activations"])
        out = []
        for i in range(n):
            *fractions, units = activations.get(i, (None,) * 4)
            fields = dict(zip(ACTIVATION_FIELDS, fractions))
            mine = [k for k, layer in enumerate(layers) if layer == i]
            if mine:
                weight = math.sqrt(weights[i])
                fields.update(
                    grad_norm=math.sqrt(grads[i]) / scale,
                    grad_rms=math.sqrt(grads[i] / counts[i]) / scale,
                    grad_max=_peak(norms, full["grad_max"], mine) / scale,
                    weight_norm=weight,
                    update_ratio=math.sqrt(deltas[i]) / weight if weight > 0 else 0.0,
                )
            else:
                fields.update(dict.fromkeys(LAYER_FIELDS[:5]))
            for name in ACTIVATION_FIELDS:
                if fields[name] is not None and math.isnan(fields[name]):
                    fields[name] = None
            out.append({name: fields[name] for name in LAYER_FIELDS})
            out[-1]["unit_activity"] = units
        return out

    def _activation_fields(self, counts: dict) -> dict[int, tuple]:
        """Zero, dead and saturated fractions and the per-unit activity
        counts of layers whose units can die, by layer index."""
        fields = {}
        for key, c in counts.items():
            i = int(key)
            profile = self.plans[i].profile
            elements = float(c["elements"])
            zero = dead = mortal = sat = None
            if "active_per_unit" in c:
                active = np.asarray(c["active_per_unit"], "float64").tolist()
                zero = 1.0 - sum(active) / elements
                if profile.can_die:
                    dead, mortal = active.count(0.0) / len(active), active
            if "saturated" in c:
                sat = float(c["saturated"]) / elements
            fields[i] = (zero, dead, sat, mortal)
        return fields

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        full = self._kept_full
        if full is None:
            return {}
        return {int(k): np.asarray(v) for k, v in full["sample"].items()}

    def read_labels(self):
        """Labels of the last full step's batch (float32, up to 64 rows) for
        a single label tensor, or None."""
        return self._read_kept(1)

    def read_inputs(self):
        """Inputs of the last full step's batch, kept like the labels."""
        return self._read_kept(0)

    def _read_kept(self, which: int):
        if self._kept is None:
            return None
        value = keras.utils.unpack_x_y_sample_weight(self._kept)[which]
        flat = jax.tree_util.tree_leaves(value)
        if len(flat) != 1 or not getattr(flat[0], "ndim", 0):
            return None
        value = np.asarray(flat[0][:LABEL_ROWS], "float32")
        return value if value.size else None


def _read_row(values) -> list[float]:
    """A host row in the `_graph_stats` ring layout (`fold_rows`) from a
    `"row"` vector: the step, no tick, the loss scale, the learning rate,
    the loss, then each variable's gradient norm (scaled)."""
    values = np.asarray(values, "float64").tolist()
    step = values[0] * _STEP_SPLIT + values[1]
    return [step, -1.0, *values[_ROW_SCALE:]]


def _peak(norms, peaks, ks: list[int]) -> float:
    """Max-abs over the gradients `ks`; NaN if any norm is NaN."""
    if any(math.isnan(float(norms[k])) for k in ks):
        return math.nan
    return max(float(peaks[k]) for k in ks)
