"""Host-side reading of the TensorFlow hooks' ring and full statistics.

`GraphStats` (in `_graph_stats`) extends `RingReader`: its in-graph
statistics write every step's row into the ring variable and return the
step's alarm values, or on a full step the named full statistics, with the
train function's logs; these methods read them on the host, where the
callback (`_step_judging`, `_reporting`, `GradientDiagnostics`) calls them
through `TrainHooks`. The ring rows are judged with `_step_rows.fold_rows`
and a full step is read with `_step_rows.full_record` and
`diagnostics.step_reader`, shared with JAX (`_jax_stats.JaxStats`).
`PaddedRows` keeps the rows of a batch under XLA, read like a variable.
"""

from __future__ import annotations

import numpy as np

from keras_actloss.callbacks._step_rows import (
    LOSS_SCALE_PATIENCE,
    RING_STEP,
    RING_TICK,
    fold_rows,
    full_record,
    pack_kept,
    quiet_steps,
    within_bounds,
)
from keras_actloss.diagnostics import step_reader


class RingReader:
    """Mixin of `GraphStats`: the host readers of its ring and full steps.

    The host checks each step's alarm values against the rules' bounds
    (`quiet`), reads the ring, and judges the steps in it (`fold_rows`),
    after an alarm and every `GradientDiagnostics.QUIET_READ` steps
    otherwise; it reads a full step's named tensors (`read_full`).

    Relies on the attributes `TrainHooks` sets: `_last_full`,
    `_last_alarm`, `counter_known`, `step_count()` and the variables
    `_ring`, `_tick`, `_inputs` and `_labels` (one per model input and
    output) and `_rates` (the rows' learning-rate columns,
    `rate_columns`); and on those `GraphStats` sets while the step is
    traced: `loss_scaled`, `_input_form`, `_label_form`, `_grad_layout`,
    `_grad_layers`, `_loss_known` and `_layout`. It sets `_consumed` (the
    last step read), `_streak`, `_last_sample` and `_bounds`.
    """

    def reset_sentinel(self) -> None:
        """Starts judging steps after the ones run so far."""
        self._streak = 0.0
        self._last_full = self._last_sample = self._last_alarm = None
        if self._tick is not None:
            self._consumed = int(self._tick.numpy())
        elif self.counter_known:
            self._consumed = self.step_count() - 1
        else:  # Nothing was written yet: the ring holds no step.
            self._consumed = -1

    def _ring_key(self) -> int:
        return RING_TICK if self._tick is not None else RING_STEP

    def _take_unread(self, rows) -> np.ndarray:
        """The rows (lists or a 2-D array) not seen yet, in key order, as a
        2-D array; they count as seen now."""
        key = self._ring_key()
        rows = np.asarray(rows, "float64")
        if rows.ndim != 2:  # No row.
            return rows.reshape(0, 0)
        rows = rows[rows[:, key] > self._consumed]
        rows = rows[np.argsort(rows[:, key], kind="stable")]
        if len(rows):
            self._consumed = int(rows[-1, key])
        self._flow.note(rows)
        return rows

    def _fold(self, rows) -> list[tuple]:
        """Judges the rows (lists or a 2-D array) not seen yet, in key
        order (see `fold_rows`)."""
        rows = self._take_unread(rows)
        if not len(rows):
            return []
        out, self._streak = fold_rows(
            rows,
            self._grad_layout,
            self._grad_layers,
            self._streak,
            LOSS_SCALE_PATIENCE if self.loss_scaled else None,
            self._loss_known,
            self._rates,
        )
        return out

    def quiet(self) -> bool:
        """Whether the last execution was a single step whose alarm values
        (squared global norm, learning rate, zero gradient norms, silent
        units, loss) stayed within the bounds (`set_bounds`): it can wait for
        `read_quiet`. False until bounds are set."""
        alarm, self._last_alarm = self._last_alarm, None
        if alarm is None:
            return False
        return within_bounds(*alarm.numpy().tolist(), self._bounds)

    def read_quiet(self) -> list[tuple[int, float, float, float, int, int]]:
        """`(step, global norm, learning rate, loss, zeros, silent)` of the
        quiet steps not read yet, from the ring, in step order (all at
        once, in NumPy; `zeros`: the count of exactly-zero gradient norms,
        `silent`: the silent units)."""
        self._last_full = None
        rows = self._take_unread(self._ring.value().numpy())
        if not len(rows):
            return []
        # Quiet steps are finite: they end a streak of loss-scale overflows.
        self._streak = 0.0
        return quiet_steps(rows, self._grad_layout, self._rates)

    def set_bounds(self, bounds: tuple[float, ...]) -> None:
        """Sets the alarm bounds (`_step_rows.BOUND_FIELDS`), checked on
        the host."""
        self._bounds = tuple(float(b) for b in bounds)

    def read_steps(self) -> list[tuple]:
        """Every step run since the last read, judged (see `fold_rows`).

        After a single step the row the train function returned is enough;
        after several (`steps_per_execution`, or rows left unread) the ring
        is read.
        """
        full, self._last_full = self._last_full, None
        if full is not None:
            row = full["row"].numpy().tolist()
            if row[self._ring_key()] == self._consumed + 1:
                return self._fold([row])
        return self._fold(self._ring.value().numpy())

    def read_full(self) -> dict | None:
        """The last full-statistics step, as Python values (None = n/a).

        The steps before it that were not read yet (from the ring) and the
        step itself are judged as by `read_steps` and returned under
        `"steps"`; `full_record` gives the rest. None when the step applied
        no gradients.
        """
        full, self._last_full = self._last_full, None
        if full is None:
            return None
        self._last_sample = full.get("sample")
        values = {k: v.numpy().tolist() for k, v in full.items() if k != "sample"}
        values.setdefault("activations", [])
        row, key = values["row"], self._ring_key()
        steps, before = [], []
        if row[key] > self._consumed + 1:
            ring = self._ring.value().numpy()
            before = ring[ring[:, key] < row[key]]
            steps = self._fold(before)
        steps += self._fold([row])
        record = full_record(self._layout, values, steps, self._loss_known, before)
        record["flow"] = self._flow.by_layer()
        return record

    def read_samples(self) -> dict[int, np.ndarray]:
        """Gradient samples of the last full step, by layer index."""
        if self._last_sample is None:
            return {}
        return step_reader.split_samples(self._layout, self._last_sample.numpy())

    def read_labels(self):
        """Labels of a recorded batch (float32, up to 64 rows each), or
        None: an array for a single label tensor, else the labels'
        structure with one per tensor (`pack_kept`).

        Kept without `tf.distribute` replicas (under `jit_compile`, for
        static shapes past the batch).
        """
        return pack_kept(self._label_form, [self._read_kept(v) for v in self._labels])

    def read_inputs(self):
        """Inputs of a recorded batch (float32, up to 64 rows each), or
        None; kept and read like the labels (one per model input)."""
        return pack_kept(self._input_form, [self._read_kept(v) for v in self._inputs])

    @staticmethod
    def _read_kept(variable):
        if variable is None:
            return None
        value = variable.numpy()
        return value if value.size else None


class PaddedRows:
    """Up to `shape[0]` rows in a variable of fixed `shape` (zero-padded)
    and their count: what XLA can assign rows of a batch of any size to.
    `numpy()` gives the rows."""

    def __init__(self, tf, shape):
        self._tf = tf
        self._rows = tf.Variable(tf.zeros(shape), trainable=False)
        self._count = tf.Variable(0, trainable=False)

    @property
    def row_shape(self):
        """The `TensorShape` of a row."""
        return self._rows.shape[1:]

    def assign(self, rows) -> None:
        tf = self._tf
        n = tf.shape(rows)[0]
        pad = [[0, self._rows.shape[0] - n]] + [[0, 0]] * (rows.shape.rank - 1)
        self._rows.assign(tf.pad(rows, pad))
        self._count.assign(n)

    def numpy(self) -> np.ndarray:
        return self._rows.numpy()[: int(self._count.numpy())]
