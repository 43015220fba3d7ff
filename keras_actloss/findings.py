"""Findings: what the package reports about a model or a training run.

A `Finding` is produced by `GradientDiagnostics` while a model trains (the
five training failure modes below) and by `keras_actloss.check_model` before
it trains (configuration mistakes such as a softmax output with binary
cross-entropy). The CLI report, the TensorBoard text summary and the
dashboard all show the same objects.
"""

from __future__ import annotations

import dataclasses

# The training failure modes GradientDiagnostics can report.
VANISHING_GRADIENTS = "vanishing_gradients"
EXPLODING_GRADIENTS = "exploding_gradients"
DEAD_RELU = "dead_relu"
SATURATED_ACTIVATIONS = "saturated_activations"
NON_FINITE = "non_finite"
TRAINING_MODES = (
    VANISHING_GRADIENTS,
    EXPLODING_GRADIENTS,
    DEAD_RELU,
    SATURATED_ACTIVATIONS,
    NON_FINITE,
)
# A cause GradientDiagnostics names while training, without failing it:
# saturating first-layer outputs from inputs that are not standardized.
UNSTANDARDIZED_INPUTS = "unstandardized_inputs"
# ...and a classifier's batches that come in label order (data sorted by
# class and not shuffled).
UNSHUFFLED_DATA = "unshuffled_data"

# Severities. A "failure" makes `keras-actloss report` exit 1; a "warning"
# (a risk seen before training, say) does not.
FAILURE = "failure"
WARNING = "warning"
SEVERITIES = (FAILURE, WARNING)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem found in a model or a training run.

    Attributes:
        mode: What kind of problem: one of `TRAINING_MODES` for training
            findings, or a `check_model` mode such as
            `"softmax_with_binary_crossentropy"`.
        layer: Name of the layer concerned, or None for the whole model.
        step: Training step (0-based optimizer iteration) at which the problem
            first appeared, or None for findings made before training.
        value: The measured value that triggered it (a gradient norm, a dead
            fraction, ...), or None.
        message: What is wrong, in one or two sentences.
        fix: What to do about it, from the source notes.
        severity: `"failure"` or `"warning"`.
    """

    mode: str
    layer: str | None
    step: int | None
    value: float | None
    message: str
    fix: str
    severity: str = FAILURE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Finding:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})

    def __str__(self) -> str:
        where = self.layer or "model"
        when = "" if self.step is None else f" at step {self.step}"
        return f"[{self.mode}] {where}{when}: {self.message} Fix: {self.fix}"


class TrainingFailure(RuntimeError):
    """Raised by `GradientDiagnostics(on_failure="raise")`.

    Attributes:
        finding: The `Finding` that stopped training.
    """

    def __init__(self, finding: Finding):
        super().__init__(str(finding))
        self.finding = finding
