"""Findings and logs of `GradientDiagnostics`: the `Reporting` mixin.

What the callback does with what it found: new findings are kept, written
and warned about, or stop or fail training per `on_failure`
(`_handle`); `check_model`'s findings join them before training and with
the first recorded labels. The TensorBoard writer is opened (on the chief)
and checked at `on_train_begin` (with a warning when another run wrote to
the same `log_dir`), gets the histograms when due and the
heatmap at the end, and is flushed and closed by `_cleanup`, which also
removes the hooks, on JAX also when an exception ends `fit`
(`_watch_fit_end`).

`GradientHealthWarning` and the registry of hooked models (`_ACTIVE`) live
here so that both the mixins and `gradient_diagnostics` can import them.
"""

from __future__ import annotations

import os
import warnings
import weakref

import keras
import numpy as np

from keras_actloss import findings as F
from keras_actloss.advisor import check_model as run_check_model
from keras_actloss.advisor.check import output_findings
from keras_actloss.callbacks._callback_support import _is_chief
from keras_actloss.diagnostics.rule_support import TOLD_CAUSE_MODES
from keras_actloss.findings import Finding, TrainingFailure
from keras_actloss.logs import events, tags
from keras_actloss.logs.writer import DiagnosticsWriter

# The instance whose hooks are installed on a model (by `id(model)`).
_ACTIVE: dict[int, weakref.ref] = {}


class GradientHealthWarning(UserWarning):
    """Warning issued by `GradientDiagnostics(on_failure="warn")`, one per finding."""


class Reporting:
    """Mixin of `GradientDiagnostics`: its findings, logs and clean-up.

    Relies on the attributes `GradientDiagnostics` sets: the constructor's
    `on_failure`, `check_model`, `log_dir` and `histogram_every_n_steps`;
    `findings` and `history`; `model` (and Keras's `_model`, read without
    syncing the training state on JAX); and `_writer`, `_hooks`, `_names`,
    `_labels_checked`, `_last_histogram` and `_synced`.
    """

    def _handle(self, new: list[Finding]) -> None:
        """Logs new findings, then warns, stops or raises per `on_failure`.

        The writer flushes after every write, so everything recorded so far
        is on disk before training is stopped or the exception is raised.
        """
        if not new:
            return
        self.findings.extend(new)
        if self._writer is not None:
            self._writer.write_findings(new)
        # One meaning of "failure": what makes `keras-actloss report` exit 1.
        failures = [f for f in new if f.severity == F.FAILURE]
        if self.on_failure == "warn" or not failures:
            for finding in new:
                warnings.warn(str(finding), GradientHealthWarning, stacklevel=2)
        elif self.on_failure == "stop":
            self.model.stop_training = True
        else:
            self._cleanup(close=True)
            raise TrainingFailure(failures[0])

    def _static_checks(self) -> None:
        # A model its own training step never calls (a GAN's `train_step`
        # calls its generator and discriminator) stays unbuilt: `check_model`
        # has no graph of it to read.
        if self.model.built:
            found = run_check_model(self.model)
            # The rules name them as the cause of what they lead to.
            self._rules.told_causes = {
                mode: tuple((f.layer, f.value) for f in found if f.mode == mode)
                for mode in TOLD_CAUSE_MODES
            }
            self._handle(self._unseen(found))

    def _label_checks(self) -> list[Finding]:
        """`check_model`'s output checks (`output_findings`) with labels of
        the first recorded batch, once. Its layer checks ran as training
        began (`_static_checks`) and need no labels: not again, as they
        read kernels (a large model's copied to the host)."""
        if not self.check_model or self._labels_checked:
            return []
        labels = self._hooks.read_labels()
        if labels is None or not self.model.built:
            return []
        self._labels_checked = True
        try:
            found = output_findings(self.model, y=labels)
        except ValueError:
            return []  # Labels it cannot read (NaN, ...): nothing to add.
        return self._unseen(found)

    def _unseen(self, found) -> list[Finding]:
        """Findings whose (mode, layer) was not reported before."""
        seen = {(f.mode, f.layer) for f in self.findings}
        return [f for f in found if (f.mode, f.layer) not in seen]

    # ------------------------------------------------------------------- I/O
    def _histograms_on(self) -> bool:
        return self.log_dir is not None and self.histogram_every_n_steps is not None

    def _histogram_due(self, step: int) -> bool:
        if not self._histograms_on():
            return False
        every = self.histogram_every_n_steps
        last = self._last_histogram
        return last is None or step // every > last // every

    def _check_log_dir(self) -> None:
        if self.log_dir is None:
            return
        if not _is_chief(self.model):
            # Multi-worker training: the chief writes the logs (as Keras's
            # TensorBoard callback did); the other workers keep findings.
            return
        try:
            if self._writer is None:
                self._warn_if_used()
                self._writer = DiagnosticsWriter(self.log_dir)
            self._writer.check_writable()  # Also when reused by a later fit.
            self._writer.open()
        except OSError as error:
            raise ValueError(
                "Argument `log_dir` must be a writable directory "
                f"({error.strerror or error}). Received: log_dir={self.log_dir!r}"
            ) from None

    def _warn_if_used(self) -> None:
        """Warns when `log_dir` holds the event files of an earlier run of
        this callback (this instance's own later fits add to its own): the
        report and TensorBoard read every file of a run directory together.
        Not for `keras.callbacks.TensorBoard`'s files: the log dir may be
        shared with it, whose file of this same `fit` may be there already
        (it opens it in `set_model`)."""
        if self._logged_to == self.log_dir:
            return
        self._logged_to = self.log_dir
        train = os.path.join(self.log_dir, tags.TRAIN_SUBDIR)
        earlier = events.event_files(train, own=True)
        if earlier:
            warnings.warn(
                f"Argument `log_dir` already holds {len(earlier)} event file(s) "
                "of an earlier run: `keras-actloss report` and TensorBoard read "
                "them together with this run's, so its findings and charts "
                "would mix with theirs. Pass a new directory for each run (as "
                f"`runs/exp1/<date>`). Received: log_dir={self.log_dir!r}",
                stacklevel=3,
            )

    def _write_heatmap(self) -> None:
        steps = [s.step for s in self.history]
        norms = np.array(
            [
                [np.nan if v.grad_norm is None else v.grad_norm for v in s.layers]
                for s in self.history
            ],
            dtype="float64",
        ).T
        self._writer.write_heatmap(steps[-1], self._names, steps, norms)

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _watch_fit_end(self, model) -> None:
        """Closes the logs when an exception ends `fit` (JAX backend).

        Keras calls `on_train_end` only when `fit` ends normally; on JAX
        `_jax_hooks.watch_fit_end` sees an exception leave `fit` and cleans
        up (hooks, then the event file, closed). Keras's TensorFlow `fit`
        runs no code after an exception: there the event file (flushed
        after every event) stays open until this callback's next `fit`
        ends, or the process exits.
        """
        if keras.backend.backend() == "jax":
            from keras_actloss.callbacks import _jax_hooks

            self._synced = _jax_hooks.watch_fit_end(
                model, lambda: self._cleanup(close=True)
            )

    def _cleanup(self, close: bool = False) -> None:
        """Removes the hooks, lets go of the model and flushes the logs (safe
        to call twice)."""
        if self._hooks is not None:
            self._hooks.remove()
        # The hooked model, and the one this instance was registered for at
        # `on_train_begin` (no hooks yet when its build was deferred). Not
        # `self.model`: on JAX reading it syncs the training state.
        for model in (getattr(self._hooks, "model", None), self._model):
            ref = None if model is None else _ACTIVE.get(id(model))
            if ref is not None and ref() in (None, self):
                del _ACTIVE[id(model)]
        # Undoes `_watch_fit_end`'s watch.
        synced, self._synced = self._synced, None
        if synced is not None:
            synced()
        self._flush()
        if close and self._writer is not None:
            self._writer.close()
            self._writer = None
