"""The train step of the JAX hooks and the choice of its compiled program.

`JaxTrainHooks` (in `_jax_hooks`, the module that touches Keras's JAX
trainer) extends `JaxPrograms`. Its train function (`JaxTrainHooks._make`,
built with Keras's `model._make_function`) runs `_step`: the model's own
`train_step`, traced with the hooks' wrappers noting into a `_Trace`, with
the step's statistics (`_jax_stats.JaxStats`) added to its logs under
`FULL_LOGS_KEY`. The callback picks the kind of the next steps with `use`
(`_step_judging` asks `traced` whether the train function was built).

A boolean argument of the step says whether it records in full: every step
returns its step, learning rate, loss, loss scale and gradient norms (one
row); a full step adds the rest of `diagnostics.step_stats.FULL_KEYS`
(gradient extremes, activation counts and gradient samples), computed
under a `jax.lax.cond` (zeros on the other steps: XLA runs only the branch
taken, and one program is compiled, not one per kind of step), and the
weight and update norms, which the host reduces from the training state
around the step (`_jax_weights`). Once the every-step checks have
run in it long enough to pay for a second compilation (`_rent_check`,
after every jitted call), they get a program of their own with no full
statistics: the one program's trace with `full` fixed to False
(`_checks_only`, XLA drops the cond), lowered and compiled on a thread of
its own (`CompileJob`) while the one program runs them: no pause in the
middle of training.
"""

from __future__ import annotations

import os
import threading
import time
import warnings

import jax
import jax.extend
import numpy as np

from keras_actloss.callbacks._jax_stats import _Trace
from keras_actloss.callbacks._jax_weights import trainable
from keras_actloss.callbacks._model_plan import sample_weighted
from keras_actloss.callbacks._step_rows import FULL, FULL_LOGS_KEY
from keras_actloss.diagnostics import step_activations


class JaxPrograms:
    """Mixin of `JaxTrainHooks`: the traced step and the choice of program.

    Relies on what `JaxTrainHooks` sets: `model`, `_make()` (the train
    function around `_step`), `_take_extra()`, `_trace_home()`,
    `_function`, `_full`, `_check`, `_compilation`, `_rent`, `_last_check`,
    `_intervals` (the last wall times between checks), `_steps_left`,
    `_summed` (`_over_execution`), `_check_job` and `_job_compared`
    (`_check_program`); and on `JaxStats`'s `_merge` and
    `_statistics`. It sets `_trace` (while a step is traced),
    `sample_weighted`,
    `_loss_known`, `_function`, `_full`, `_check` (whether the checks run in
    their own program) and the other attributes of `_rent_check`.
    """

    # What an every-step check saves, as a share of a step, in a program of
    # its own rather than the one program's untaken cond: measured on a
    # warmed-up MLP, 1.011x a plain step against 1.134x (RESULTS.md).
    CHECK_SAVING = 0.1
    # ...of a step counted at most this long (seconds): the cond costs
    # about as much in a longer step (the MLP's steps were 0.55-0.73 ms; a
    # CNN's check program saved nothing measurable on steps of 28 ms,
    # RESULTS.md).
    SAVING_STEP = 0.7e-3

    # --------------------------------------------------------- in the trace
    def _step(self, state, data, full):
        """The model's `train_step` with the statistics added to its logs
        (the full ones when `full`, see `_jax_stats._Trace`)."""
        trace = self._trace = _Trace(full)
        trace.home = self._trace_home(data)
        self.sample_weighted = sample_weighted(data)
        leaves = jax.tree_util.tree_leaves(data)
        trace.batch = leaves[0].shape[0] if leaves and leaves[0].ndim else None
        trace.state_in = trainable(state)
        try:
            logs, state = self.model.train_step(state, data)
            extra, state = self._take_extra(state)
            trace.state_out = trainable(state)
            self._loss_known = extra is not None
            self._prepare_counts(trace, extra)
            out = None
            if trace.applied:
                applied = self._merge(trace.applied)
                out = self._statistics(trace, applied, extra, data)
        finally:
            self._trace = None
        if out is None:
            return logs, state
        if not isinstance(logs, dict):
            raise ValueError(
                "GradientDiagnostics expects `train_step` to return a dict of "
                f"logs, as Keras documents. Received: {type(logs).__name__}"
            )
        return {**logs, FULL_LOGS_KEY: out}, state

    def _prepare_counts(self, trace, extra) -> None:
        """Sets `trace.count_activations`: the activation counts of the
        layer outputs kept inside `compute_loss_and_updates` (`extra`'s
        `"outputs"`, taken out of it) joined to those of the layers that
        ran only outside it (a custom `train_step`'s own losses), their
        elements and samples counted in the step (`activation_vector`'s
        `elements`). `_full_statistics` calls it inside the full
        statistics' conditional (a conditional of their own in the forward
        pass, where the outputs are made, cost every quiet step more)."""
        inside = {} if extra is None else extra.pop("outputs", {})

        def count_activations():
            vector, layout = self._activation_counts(inside)
            counted = {entry.layer for entry in layout}
            loose = {i: x for i, x in trace.loose.items() if i not in counted}
            second, second_layout = None, ()
            if loose:
                second, second_layout = self._activation_counts(loose, True)
            vector, trace.activation_layout = step_activations.joined(
                vector, layout, second, second_layout
            )
            return vector

        trace.count_activations = count_activations

    def _over_execution(self, out: dict) -> dict:
        """A full step's statistics with its activation counts, batch size
        and steps summed over the full steps of the execution so far (device
        arrays), as TensorFlow's `GraphStats._over_execution`: with several
        steps per execution a recording counts all their batches."""
        before, self._summed = self._summed, out
        if before is None or "activations" not in out:
            return out
        head = out["head"].at[1:].add(before["head"][1:])
        self._summed = {
            **out,
            "activations": before["activations"] + out["activations"],
            "head": head,
        }
        return self._summed

    def end_execution(self) -> None:
        """After a full execution: the next starts its own sums."""
        self._summed = None

    # --------------------------------------------------------- train function
    def traced(self, mode: str) -> bool:
        """Whether the train function that runs `mode` steps was built: one
        function serves both modes (`use`)."""
        return self._function is not None

    def use(self, mode: str) -> None:
        """Makes the next steps record full statistics (`FULL`) or only the
        every-step check: an argument of the one train function, built on
        first use (`_make`; no second compilation)."""
        self._full = mode == FULL
        if self._function is None:
            self._function = self._make()
        self.model.train_function = self._function

    def _rent_check(self, start: float, other: bool) -> None:
        """Switches every-step checks to a program of their own when it
        pays for its compilation.

        The first call of the jitted step waits for its compilation: its
        time stands for the check program's (a smaller one), and its
        `compile_share` for what compiling that on another thread costs
        the training. A check run by the one program costs about
        `CHECK_SAVING` of a step more than one with no full statistics (the
        cond's untaken branch: its operands, the zeros it returns), of a
        step of at most `SAVING_STEP`: a longer step spends its time on the
        model, not on the cond. The wall time from one such check to the
        next counts as the step. The
        check gets its own program once the steps left in the `fit` (when
        known) would save that cost, or once the extra paid so far adds up
        to it (a run of unknown or many short fits pays at most twice the
        cost). A short run compiles one program. `start`: when the call
        began; `other`: whether it ran a full step or a check in its own
        program.
        """
        now = time.perf_counter()
        last, self._last_check = self._last_check, None if other else now
        if self._steps_left is not None:
            self._steps_left -= 1
        if self._compilation is None:
            self._compilation = now - start
            self._share = compile_share()  # Once: not a system call a step.
        elif last is not None and not other:
            steps = self._intervals
            steps.append(now - last)
            counted = self.SAVING_STEP
            self._rent += min(steps[-1], counted)
            # The median of the last few: one check can wait for the host.
            left = 0.0
            if self._steps_left and len(steps) == steps.maxlen:
                # The median of an odd count (`statistics.median` took more
                # time a step than the rest of this check).
                median = sorted(steps)[len(steps) // 2]
                left = self._steps_left * min(median, counted)
            price = self._compilation * self._share
            if max(self._rent, left) * self.CHECK_SAVING >= price:
                self._check = True

    def _check_program(self, step, state, data, out_shardings):
        """The check program for `data`, or None while it compiles (or for
        data of another shape than it was compiled for: an epoch's last
        batch, which the one program runs).

        Made the first time it is asked for from the one program's trace
        (`jax.jit`'s own, cached: no second trace of the model's
        `train_step`) with its `full` argument fixed to False
        (`_checks_only`): XLA drops the cond of the full statistics and
        all that only they read. It is lowered and compiled on a thread of
        its own (`CompileJob`): training goes on in the one program
        meanwhile. Kept for later fits while their training state and
        batches (and their shardings, under a distribution) are as the
        ones it was made for (compared at each fit's first check: a fit
        with another batch size gets a new one).
        """
        job = self._check_job
        if job is not None and not self._job_compared and not job.fits(state, data):
            job = None
        self._job_compared = True
        if job is None:
            try:
                traced = step.trace(state, data, np.bool_(False))
            except Exception as error:  # noqa: BLE001 - warned by the job
                traced = error  # Such as a JAX without this API.
            sharded = out_shardings is not None
            shapes = jax.tree_util.tree_map(
                lambda x: _shape_of(x, sharded), (state, data)
            )

            def lower():
                if isinstance(traced, Exception):
                    raise traced
                checks = jax.jit(
                    _checks_only(traced), donate_argnums=0, out_shardings=out_shardings
                )
                return checks.lower(*shapes)

            job = self._check_job = CompileJob(lower, state, data, sharded)
        return job.program_for(data)


def _checks_only(traced):
    """The traced step (`jax.stages.Traced` of the one program) as a
    function of `(state, data)` with its `full` argument False."""
    run = jax.extend.core.jaxpr_as_fun(traced.jaxpr)

    def checks(state, data):
        args, tree = jax.tree_util.tree_flatten(((state, data, np.bool_(False)), {}))
        if tree != traced.in_tree:
            raise ValueError(f"Expected arguments {traced.in_tree}. Received: {tree}")
        return jax.tree_util.tree_unflatten(traced.out_tree, run(*args))

    return checks


def _shape_of(value, sharded: bool):
    """`value`'s shape and dtype (and sharding, for a distributed step)."""
    value = value if hasattr(value, "dtype") else np.asarray(value)
    sharding = getattr(value, "sharding", None) if sharded else None
    weak = bool(getattr(value, "weak_type", False))
    return jax.ShapeDtypeStruct(
        value.shape, value.dtype, sharding=sharding, weak_type=weak
    )


def _signature(data, sharded: bool = False) -> tuple:
    """The tree structure and the leaves' shapes and dtypes (and shardings,
    `sharded`) of `data`."""
    leaves, tree = jax.tree_util.tree_flatten(data)
    return tree, [
        (np.shape(x), getattr(x, "dtype", None))
        + ((getattr(x, "sharding", None),) if sharded else ())
        for x in leaves
    ]


def compile_share() -> float:
    """The share of a compilation's time that compiling it on another
    thread costs the training: all of it with one core besides the
    training's (on two cores the steps of the MLP of
    `benchmarks/overhead.py` slowed by most of it, see RESULTS.md), 1 / n
    with n others."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        cores = os.cpu_count() or 1
    return 1.0 / max(1, cores - 1)


class CompileJob:
    """The lowering (`lower()`) and XLA compilation of a program on a
    thread of its own.

    XLA releases the GIL while it compiles, so the training thread runs
    on (a `fit` that ends first does not wait for it; the process does, at
    exit). `program_for` gives the compiled program once it is done, for
    data of the shapes it was lowered with. A compilation that fails (such
    as an accelerator short of memory for its autotuning while training
    runs beside it) is warned there, on the training thread, and the
    checks stay in the one program: an optimization that failed does not
    stop the training.
    """

    def __init__(self, lower, state, data, sharded: bool = False):
        self.sharded = sharded
        self.state = _signature(state, sharded)
        self.signature = _signature(data, sharded)
        self.program = None
        self.error: Exception | None = None
        self._warned = False
        self.done = threading.Event()
        # Not a daemon: Python waits for it before it exits. A daemon thread
        # still in XLA when the interpreter finalizes aborts the process
        # (`FATAL: exception not rethrown`), as a script whose fit ends
        # while it compiles would.
        thread = threading.Thread(
            target=self._compile, args=(lower,), name="keras_actloss-compile"
        )
        thread.start()

    def _compile(self, lower) -> None:
        try:
            self.program = lower().compile()
        except Exception as error:  # noqa: BLE001 - warned on the training thread
            self.error = error
        finally:
            self.done.set()

    def fits(self, state, data) -> bool:
        """Whether it was lowered for this training state and batches."""
        sharded = self.sharded
        return (_signature(state, sharded), _signature(data, sharded)) == (
            self.state,
            self.signature,
        )

    def program_for(self, data):
        """The compiled program, if done and lowered for data like `data`;
        else None (also after a failed compilation, warned once)."""
        if not self.done.is_set():
            return None
        if self.error is not None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "GradientDiagnostics could not compile the program of its "
                    f"every-step checks ({type(self.error).__name__}: "
                    f"{self.error}); they go on in the train step's one "
                    "program, at a higher cost per step.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None
        same = _signature(data, self.sharded) == self.signature
        return self.program if same else None
