"""`GradientDiagnostics`: per-layer gradient and activation health in `fit`."""

from __future__ import annotations

import os
import time
import weakref

import keras

from keras_actloss.advisor.layer_checks import unbounded_recurrences
from keras_actloss.callbacks import _model_plan
from keras_actloss.callbacks._callback_support import (
    ON_FAILURE,
    SUPPORTED_BACKENDS,
    _check_backend,
    _hooks_class,
    activity_regularizers,
    check_arguments,
    clipping,
    gain_of,
    input_gates,
    input_preprocessing,
    input_scale,
    kernel_scales,
    layers_of,
    output_bias,
    preprocessing_note,
    probability_output,
    recording_gap,
    relu_shrink,
    step_stats,
    traced_label_checks,
    uninformed_focus,
    uninformed_loss,
    weight_decay,
)
from keras_actloss.callbacks._reporting import (
    _ACTIVE,
    GradientHealthWarning,
    Reporting,
)
from keras_actloss.callbacks._step_judging import StepJudging, StepSchedule
from keras_actloss.callbacks._step_rows import FULL, SENTINEL
from keras_actloss.diagnostics.records import LayerInfo, StepStats
from keras_actloss.diagnostics.rules import HealthRules, Thresholds
from keras_actloss.findings import Finding
from keras_actloss.profiles import EXPONENTIAL, SOFTMAX

__all__ = [
    "ON_FAILURE",
    "SUPPORTED_BACKENDS",
    "GradientDiagnostics",
    "GradientHealthWarning",
    "input_scale",
    "recording_gap",
    "step_stats",
]


class GradientDiagnostics(
    StepSchedule, StepJudging, Reporting, keras.callbacks.Callback
):
    """Records per-layer gradient and activation health while a model trains.

    Add it to `model.fit` to see, per layer, how large the gradients the
    optimizer really applies are and how many activations are zero or
    saturated, written to TensorBoard, and to be told when training fails:
    vanishing or exploding gradients, dead ReLUs, saturated sigmoid/tanh
    units (or ELU, SELU and softplus units in their flat negative tail), or
    non-finite values (see `keras_actloss.diagnostics.rules`).

    What is recorded:

    - The exact gradients `optimizer.apply` receives in `fit`'s own training
      step (no second pass), before clipping; unscaled under
      `LossScaleOptimizer`; summed across replicas under `tf.distribute`.
      On the JAX backend, those `optimizer.stateless_apply` receives in
      the jitted step (the global batch's under
      `keras.distribution.DataParallel`); a weight the loss does not depend
      on gets a zero gradient rather than none, and the loss comes from
      `model.compute_loss_and_updates` only (not from a GAN's own losses;
      activations are, but not in a `scan`, `vmap`, remat or nested `jit`).
      Every optimizer that may update the model's weights is watched:
      `model.optimizer`, every optimizer held by an attribute of the model
      or of one of its layers (directly or in a list or dict, as a GAN's
      `train_step` keeps `self.d_optimizer` and `self.g_optimizer`), and
      those passed as `optimizers`. A step's statistics cover the gradients
      of every `apply` (`stateless_apply`) call in it; a variable updated
      by two optimizers in one step gets the sum of its gradients, and its
      update-to-weight ratio compares the weights before the step's first
      update and after its last. Only the outer optimizer of a
      `LossScaleOptimizer` is watched.
    - Every step: each gradient's norm and the learning rate (each
      optimizer's, when several apply: a jump of any one is named),
      returned with the step's logs and judged on the host right after the
      step (with
      `steps_per_execution=k`, after each execution of `k` steps, from a
      ring of rows in a variable). Under dynamic loss scaling a non-finite
      step whose loss is finite is an overflow that the optimizer skips;
      it only counts as non-finite once it persists for 10 steps in a row
      (before any update was applied, also with the loss scale down to 1:
      the optimizer is still finding its scale).
      A non-finite loss counts at once (no loss scale causes it), though
      the optimizer skipped its update.
    - Full recordings: per layer with trainable weights the gradient L2 norm,
      RMS and max-abs and the update-to-weight ratio `||dw|| / ||w||`; per
      layer whose output goes through a ReLU-family, sigmoid or tanh activation
      (a `SimpleRNN` that returns sequences: its output at every step) the
      fraction of zero (inactive) outputs, of dead units (channels inactive for
      every sample of the batch) and of saturated outputs; per Keras
      `MultiHeadAttention` or `GroupQueryAttention` (Keras's own attention,
      over one axis) the share of queries, of at most 32 evenly spaced per
      sequence and among those that see two keys or more (not the first of
      causal attention, nor padding), whose largest attention weight is at
      least 0.99 (one-hot),
      computed from the step's projected queries and keys with the layer's
      mask (written as the saturation of an entry named as the layer). A
      ReLU layer whose outputs are not measured (a `SimpleRNN` that returns
      only its last step) counts as dead when every gradient of its weights
      is exactly 0 on those batches while a layer nearer the outputs gets a
      gradient. Inside a
      layer or subclassed model of the user's own, whose `call` may apply
      a ReLU itself (`keras.ops.relu`, unseen), a linear layer with a bias
      or a normalization's scale other than the model's last layer is
      judged by sign: its dead units are those at most 0 on every sample
      whose weights got no gradient, and only where a layer nearer the
      outputs got one (no zero fraction is recorded for it). They are
      dense when failures start: every step for the first 8 steps, then at
      gaps growing by one step every 4 steps up to
      `every_n_steps`; and every step for a burst of 8 steps (or as many as 128
      samples take, at small batch sizes) from the step after a jump: a learning
      rate changed 10x, the start of an explosion, more gradient tensors
      entirely 0 in two steps in a row than in any two in a row of the last 32
      steps (a layer fell silent; an output head whose batch's loss is exactly 0
      has zero gradients for one step), or, read from noisy series, a global
      gradient norm 10x above that of every one of the last 32 steps or 10x
      below their median for 3 steps in a row, or a quarter more units with no
      gradient from the batch (exactly 0 in their bias or normalization offset)
      than the most of those steps. A noisy jump starts a burst at most once in
      `every_n_steps` steps, twice as rarely after each burst that found
      nothing; after the first 32 steps, a new record of such units (an eighth,
      at least 2, over the last: units dying a few at a time) always does. So
      does, as a noisy jump (with a back-off of its own), a recording on which
      at least `dead_fraction` of a ReLU-family layer's units (not yet reported
      dead) were inactive for its whole batch or for its recent recordings
      together: dying units are confirmed on fresh batches.
    - `step` is the iteration count (before the update) of the first
      optimizer whose `apply` runs in the step: `model.optimizer` in a
      plain `fit`, the first one a custom `train_step` uses otherwise
      (under gradient accumulation, where `iterations` counts updates, its
      count of `apply` calls: one step per batch). A
      second `fit` continues it (a new optimizer's, after `compile`, starts
      at 0, as in Keras's `TensorBoard`; the rules then start afresh).
    - A model that is not built when `fit` starts (no `Input`: subclassed,
      or a `Sequential` given none) is built by TensorFlow in its first
      step, which runs Keras's own train function unrecorded; recording
      (and `check_model`) starts with the second step, and a non-finite
      loss in the first step's logs (or weights it left non-finite) is
      reported as a non-finite step right after it. So it does, on
      TensorFlow, for a built model with layers still unbuilt (inside a
      layer of the user's own that gives its output shape without calling
      them), which make their weights in the first step. A model that its
      `train_step` never calls stays unbuilt (a GAN that calls only its
      generator and discriminator, as the Keras DCGAN example's): when the
      layers it holds are built (each network given an `Input`), it is
      recorded from its first step; otherwise from its second. Either way
      without `check_model`: it has no graph of the model.

    When each failure can first be reported (default thresholds; step
    counts from the onset, with the finding's `step` at the onset):

    - `non_finite`: after the step it happens in, before the next step
      runs (after the execution, with `steps_per_execution`); under dynamic
      loss scaling, when only the gradients overflowed (a finite loss),
      after 10 such steps in a row (from the first step, once the loss
      scale is down to 1: 16 steps from Keras's first scale, 2^15). With
      `on_failure="stop"` or
      `"raise"` training stops there. A step run in full (as every one at
      the start of training is) kept its batch: NaN or inf in its inputs
      or labels names the data, a batch all finite (of fewer than 64
      samples) the model's forward pass or the loss.
    - `exploding_gradients` (not while a one-output classifier that began
      the fit fitted, its loss under a tenth of an uninformed
      prediction's, has its loss still under that prediction's: a rise of
      the norm from a fitted model's is new data):
      after 2 steps over the limit (100x the early
      and the recent norm with the loss 1.1x its recent level, or 1e6; the
      second 1.5x the first, else after 3; beyond any step over it that the
      norm came back down from), after 1 step at 1e4x the early norm (the
      loss risen too, or over 1e6), or together with the NaN that ends it,
      when the step before it was over the limit or 10x its recent level,
      or its recorded update changed a layer's weights by more than their
      own norm; after 2 steps in a row that each grew the norm 3.2x with
      the loss rising at both, when the second's recorded update changed
      most layers' weights by more than their norm (from the first step:
      the early norm is made of them); 3 steps after one step over the
      limit, or under it at 10x the recent median norm while no new data
      comes (the batch's own loss risen with it), when the loss of each
      of those 3 stayed 3x its level before it (the window's median, and
      its last 4 steps') and above where training
      began (one batch far off the others' scale threw the weights off,
      the norm back under the limit at once; a step too large threw a
      fitted model back to chance); with the zero gradients they end in,
      when every gradient is exactly 0 within 20 steps of a norm 10x the
      recent median and the early one, the loss 3x where training began
      and its level before that norm
      (a saturated output: Keras's cross-entropy on JAX clips it), or,
      when they begin within the first 5 steps (before the norm has a
      level), once the loss of a step before them and theirs is 3x where
      training began (the update before it unrecorded, as in executions
      of several steps); after
      10 steps in a row with
      the loss 3x where training began while the gradients still flow
      and the last recorded update moved a layer's weights by 5% of their
      norm or more (training diverges with bounded gradients, such as a
      softmax output fed probabilities); within 20 steps of a learning
      rate jumping 10x up, after 3 steps with the loss 3x its level and
      above half of where training began (half of what the model learned
      undone), or after 5 whose median loss is 1.5x its level and over
      where training began (all of it undone), once the norm rose 3x
      (normalization can hold it under the limit); within 10 steps of such
      a jump,
      at the first recording whose update changed a layer's weights by
      more than their norm with the loss 1.1x its level then or at a later
      recording, or the median layer's by a tenth with the loss
      so high (Adam and normalization can bring both back at once), or
      whose weights grew by more than their norm since the last recording
      before the jump with the loss that high at it or at a step since (an
      update that saturated the output, every gradient 0 after it; with
      `steps_per_execution`, an execution recorded in full from its first
      step when a callback raised the learning rate 10x before it), or
      under dynamic loss scaling after 3 overflows in a row; under dynamic
      loss scaling, once an update was applied, after 4 overflows in a row
      with the loss 3x its level and above where training began, or after
      5 whatever the loss, or, when every step from the first one
      overflowed with the loss finite (no update ever applied), with the
      `non_finite` step that ends them; after 2 recordings in a row whose
      update changed a layer's weights by more than their norm while the
      loss rose 3x from the first (and above where training began): a step
      size that blows the model up; after 3 recordings over the 5 steps
      after one such update with the loss 3x where training began at each
      (one step that threw the model off, as Adam's first at a rate of 1;
      a recording between at 2x or more neither counts nor ends it);
      at the first recording whose update changed a layer's weights by 10x
      their norm and by 1 or more per weight (or after which they are that
      much larger than at the last recording, with a step over the limit
      between); after 3 recordings with a layer's gradient RMS 1e3x that of
      the layers nearest the loss (a recurrent layer's 10x, where the inputs
      are standardized and the model has not fitted); after 3 recordings
      over 5 steps whose median layer's update changed its weights by 0.15
      of their norm or more (healthy steps: about 0.001) with the loss over
      half of where training began at each (steps too large for the loss
      to settle, as SGD on regression targets far from unit scale), or
      after 3 such recordings in a row over fewer steps with the loss at
      1.5x where training began or more at each (Adam at 0.1);
      for a one-output classifier under cross-entropy, after the first 5
      steps when the loss of each was at least 5x that of a prediction that
      knows nothing (ln C for C classes, ln 2 for binary, the focal
      losses' own level, times the output's `loss_weights`; under a focal
      loss 5x over the share `(1 - p)^gamma` of its cross-entropy it keeps
      there; not judged when `fit` has sample or class
      weights, which scale it by their mean; their median 1.5x where the
      kernels' RMS over He's scale, below, multiplies to 1000 or more):
      outputs extreme (or wrong) from the start, from initial weights far
      too large (from inputs not standardized instead:
      `unstandardized_inputs`, a warning; not judged when a normalization
      layer feeds the classifier, as in
      `keras.applications`' EfficientNet or ResNet, nor when the kernels'
      RMS over He's scale multiplies to under 10 across the layers, the
      recurrent kernel of a `SimpleRNN` without a sigmoid or tanh once per
      time step, with fewer than 4 residual sums: a trained model meeting a
      new task);
      for such a classifier whose first step's loss was 5x that level, at
      the first recording within 64 steps at which the norm has fallen
      100x from that step's while each of the last 3 steps' losses is still
      no lower than that level (the optimizer damped what the initial
      weights blew up, as a recurrent kernel's gain over 60 time steps
      does, and the model learnt nothing; named after the recurrent layer
      when it has the largest gradients then).
      On 3 of 5 steps whose median loss over the last 5 steps is 2x its
      lowest or more and halfway back to where training began, the
      learning rate 3x its first and 1.5x what it was at that lowest or
      more (no 10x jump since): a schedule that raises the rate until
      training diverges (a warm-up to a peak too high, an exponential
      range test), named with the rate where the loss was lowest.
      Not while a jump of the norm that came with its batch (10x, the loss
      3x, from the recent level, no learning-rate jump before it) stays up
      and every update recorded since moved the weights by under 5% of
      their norm: new data, not an explosion. Under a regression loss
      whose targets are far from unit scale (10 or more), the explosion and
      the NaN it ends in name the targets and their fix; in a model that
      sums 4 or more residual branches and has no normalization layer, an
      explosion from the first step names the sums and their fix. While
      the optimizer's weight decay takes 1e-2 of every weight a step or
      more (learning rate times `weight_decay`), an exploding or vanishing
      gradient or dead units name it, with a lower `weight_decay` for fix.
      Dead units or vanishing gradients (failures) in a model with a
      dropout layer of rate 0.9 or more (`check_model`'s `extreme_dropout`)
      name it, with a lower rate for fix; in one with a layer
      normalization over a single value (`constant_normalization`), that
      normalization, with its fix.
      Dead units or vanishing gradients (failures) within 20 steps of the
      first, in a model without a normalization layer whose ReLU layers'
      kernels start under He's scale so far that the signal shrinks to
      1e-2 of its scale through them or less (20 layers under Keras's
      default `glorot_uniform`), name that scale, with He's initializer
      for fix.
    - `unstandardized_inputs` (a warning) at the first recording, when the
      inputs reach the first layers (through the model's leading
      `Rescaling` and `Normalization` layers, which every input scale here
      is taken after) with a feature's largest mean or spread at 0.02 or
      under: their kernels' gradients are that small (images in [0, 1]
      rescaled by 1/255 once more); and for a recurrent layer (LSTM, GRU,
      SimpleRNN) that the inputs reach first, when they are not
      standardized (a feature's mean or spread over 2) and put 50% or more
      of the pre-activations they alone give its gates on that batch in
      the gates' flat tails; from 75%, `saturated_activations` (a failure)
      instead, naming the inputs: the gates' outputs mix inside the cell,
      so this first batch is the one measure of them. Of a model of several
      inputs, each one's scale is taken through its own leading layers and
      judged at the layers it reaches first (its recurrent gates are not).
    - `unshuffled_data` (a warning) at the first recording on which, of
      the last 32 recorded batches of a classifier of one output (sparse,
      one-hot or binary labels; the first 64 labels of each batch, at
      least 8), at least 4 are kept, three quarters of them hold one class
      each (90% of their labels), two classes or more come over them, and
      their label counts are 6 standard deviations from independent of
      the batch (Pearson's chi-square, Wilson-Hilferty): data sorted by
      class and not shuffled (one class of 4 in batches of 16 is told at
      step 4, with the second class); or when, over at least 4 of the last
      32 recorded batches of a model of one input of features (rank 2, not
      ids; a regression's targets as more columns; the first 256 columns),
      a column spreads within a batch, on average, a tenth or less of its
      variance over them together (shuffled batches: about all of it):
      each batch a narrow slice of the data (sorted by it, a time series
      in time order), told at the fourth recording. Units found dead from
      then on (with no large update or rate jump before) are a warning:
      they may be silent only on those batches; and a loss that stays 3x
      where training began is not taken for a divergence (each batch's
      loss is that of its own part of the data).
    - What counts towards those streaks: a layer whose gradient ratios are
      over their vanishing bounds by less than 2x on a recording keeps its
      streak (they flicker across the bound with the output layer's noise;
      only a recording within the bounds confirms one); a unit inactive on
      the window that fired on some batches before its silence, so that
      its silence is at least 7% likely, is rarely active, not dead (after
      8 recordings; a unit active on every batch before stays dead however
      long it is silent); nor is a unit that was silent on a window's worth
      of samples before and came back with an eighth of its layer (on 3
      recordings in a row), silent again while no layer's weights moved by
      a fifth of their norm since its last activity: the batches of a
      time-ordered stream switch it off and on; where a layer applies its
      own ReLU after its bias (a `Dense` or `Conv2D` with
      `activation="relu"`, and the layers judged by sign), every step's
      gradients of the bias, exactly 0 for a unit inactive on the whole
      batch, tell the same of every step, recorded or not: a unit that
      passed a gradient back on any step of the window is active, and one
      silent since its last no longer than its share of the steps with a
      gradient (over about the last 64, once 16 steps ran) makes 7% likely
      is rarely active; a fitted model's layer that saturates suddenly (by a
      quarter of its outputs or more since its last recording) while the
      losses recorded since rise 2x, and by 2% of the early loss, is not
      excused by the fit: it threw the model off what it learned (for as
      long as the layer stays saturated).
    - `vanishing_gradients`, `saturated_activations` (a warning for a
      hidden layer whose inputs also reach the outputs around it, by a
      skip connection or a parallel branch: the layers before it learn on
      through that path), `dead_relu`, update
      ratios: once the condition held for 3 recordings over at least 5
      steps (dead units: over at least 128 samples of the latest
      recordings, 64 when not one unit of a layer of 8 or more was active,
      so on batches of 1 a layer dead from the start is reported at step
      63 at the earliest, but at step 4 behind a `BatchNormalization` of
      features, whose output is then its offset for every sample;
      with `steps_per_execution=k` >= 3, 2 recordings, one per
      execution; its activations are over the batches of the execution's
      steps recorded in full, each a recording's worth for dead units and
      saturation, so that one execution of 5 or more steps recorded in
      full (as the first ones are) is enough for them, and for vanishing
      gradients, whose steps before the recorded one are read from their
      every-step rows of gradient norms; under dynamic loss
      scaling the batches whose update was skipped count as steps), so
      within about 5 steps of the start of training or of a jump with
      batches of 32 or more (units dying, whole layers or many of their
      units at once, or a few at a time, which sets records, are such a
      jump); later in a long run without a jump, after 3 recordings
      `every_n_steps` apart (dead units: within about 5 steps of a
      recording that finds most of a layer's units inactive; saturation:
      of one over the limit). A layer
      whose gradient RMS (or its ratio to the layers near the output) grew
      2x over its vanishing streak is catching up, and its streak starts
      again (a body behind a classifier head that starts at zero under
      SGD); a layer nearer the output with weights of RMS under 3e-3 is
      named as the cause. Units of a
      layer active on the first recorded batch that die within the first 64
      steps of training, with the learning rate unchanged (no 10x jump,
      and not warmed up 10x over its first value) and the loss
      neither risen a tenth over where training began lately nor by half on
      a step recorded up to the one after they died (with
      `steps_per_execution`, on any step of a recorded execution; each
      also by 3 and 6 times the spread of the recorded losses: the noise
      of small batches; on batches of 32 or more, a rise by where training
      began is a jump however wide that spread),
      are not reported within those steps, and after them (as later deaths
      in that layer) only once the model stops learning: its recent loss
      fell less than 5% over the last 64 steps and it has not fitted (half
      its early loss), or, for later deaths, the loss rose a tenth of where
      training began. A layer fed inputs that barely differ
      between samples (an averaged `Embedding`) can lose half its units for
      a hundred steps under Adam, while the model learns, and get them back
      as the layers before it grow (as can one unit of a two-unit layer
      inactive from the start, which is treated so too, as is part of a
      layer inactive from the first batch while the loss falls 5% below
      where training began and 3 times the spread of the recorded losses:
      the lottery of inputs that barely differ, as behind a global average
      pooling); units dead from the first batch (a whole layer, or part of
      one with the loss level), killed with a rising or jumping loss, or
      85% of a layer or more with the loss no lower since they died, are
      reported as above; as a warning where they are at most two thirds of
      the layer and, but for fewer than a quarter of its units, were
      inactive on the first recorded batch already (initialisation left
      them off, or inputs far from unit scale that the layer is computed
      from; the layer learns through the rest; told once they stayed
      so over 32 steps: the first batches of an unshuffled series are one
      stretch of the data), or where the layer is
      fed by a global average pooling, they are at most two thirds of it
      and the learning rate is unchanged (rare units there look dead on a
      window).
    - `vanishing_gradients` of the whole model as the above (3 recordings
      over 5 steps) when the kernels (every gradient tensor that is not a
      vector) carry at most 3e-6 of the squared gradient norm while the
      model has not fitted, no layer's units are mostly inactive on the
      batch and no layer's gradients are exactly 0 (dead units and layers
      cut off are told as such, and this not after them): a kernel's
      gradient is its inputs times the error, so nothing
      from the inputs reaches them (an LSTM's gates held closed by biases
      of -6, a scaling far too small; healthy models are at 0.6-0.95, a
      large embedding at 0.08, a depthwise/separable CNN that starts
      slowly at 2.5e-5 and up).
    - `vanishing_gradients` for layers cut off from the loss (every
      gradient of a layer with weights exactly 0 while a layer nearer the
      outputs gets one, as behind dead ReLUs in a layer or subclassed
      model of the user's own, whose `call` is not watched, after a layer
      without a bias or a normalization, which is not judged by sign): as the
      above, on the layer of them nearest the outputs, when that one and
      every other sublayer with weights of such a layer are cut, naming
      the others, or, in a functional model's graph, when the layers cut
      off are every layer with weights as far from the outputs as the
      nearest of them or farther, the first layer the inputs reach among
      them (nothing learns from the inputs: a `stop_gradient`, rounding or
      a normalization over a single value after them; a branch cut off
      there is by design); not while a watched
      ReLU-family layer has most of its units dead (`dead_relu` names the
      layers it cuts off), after an explosion, or behind an output layer
      without a gradient.
    - `vanishing_gradients` for the whole model (every gradient exactly 0,
      the global norm below float32's smallest normal number or 1e-9 of
      the loss's square root, while the loss is finite, above 1e-6 and
      above 1e-3 of its early level): after 5 such steps in a row, judged
      on every step (a saturated softmax/sigmoid output under a loss that
      clips its probabilities, or under mean squared error; from the first
      step with the loss exactly the same on every batch, a loss that does
      not read the predictions, and its fix); where no loss
      is known (a custom `train_step`'s own), every gradient exactly 0 for
      5 steps from the first step, or from within 20 steps after a
      learning-rate jump up or an explosion, or 5 after an update larger
      than the weights (a fitted model's hinge loss has no gradient
      either); an output
      layer whose own bias saturates it (10 or more from 0, or spread over
      the classes of a softmax), found by the loss of the first 5 steps
      5x that of a prediction that knows nothing, is
      `saturated_activations` of that layer, and so is one output of
      several with a sigmoid, tanh or softmax whose own gradient is so
      small (not exactly 0) while another output's is not, or which is in
      its flat tails from the first recording with a gradient under 1e-4
      of the other outputs' (exactly 0 included), after 3 recordings over
      5 steps;
      when every output layer has a ReLU activation (not a capped one,
      as ReLU6), the same 5 steps are `dead_relu` on the output layer
      instead (its gradient is 0 only where it outputs 0, so it did for
      every sample);
      for a step of several optimizers' `apply` calls (a GAN), when the
      gradient norm of each one's layers fell to 1e-2 of its first 5
      recordings' or less, the loss, when known, neither converged nor
      fitted: after 3 recordings over 5 steps, densely recorded from the
      first (a discriminator that saturates under the generator's
      saturating loss).
    - `vanishing_gradients` for the whole model when its updates are too
      small to move the weights (every layer's recorded update under 1e-7
      of its norm, which float32 mostly rounds away; under 1e-5 where the
      optimizer's `clipnorm`, `global_clipnorm` or `clipvalue` cuts every
      layer's gradient 1e3x or more) while the loss stays at 0.8 of its
      first steps' or over it (a classifier's, at half the loss of a
      prediction that knows nothing or over it), the learning rate not
      rising: after 3 recordings over 5 steps, so at step 4 of a run
      that starts so (a learning rate of 1e-7 under SGD, `clipnorm=1e-8`).
      The gradients measured here are from before clipping: they look
      healthy. Not after a reported explosion that left a layer's weights
      100x their first recorded norm or more: updates small against them
      are its consequence.

    Steps that are not recorded run a train function with only the
    every-step check; the model's own train function is restored after
    `fit` (also when `fit` died: the next training call undoes the hooks
    first, and a new `GradientDiagnostics` may then watch the model).

    Examples:

    ```python
    diag = keras_actloss.callbacks.GradientDiagnostics(log_dir="runs/exp1")
    model.fit(x, y, epochs=5, callbacks=[diag])
    for f in diag.findings:
        print(f.mode, f.layer, f.step, f.value, f.message)
    ```

    Args:
        log_dir: Directory for TensorBoard event files (written under
            `<log_dir>/train`), or None to only collect `findings`. Defaults
            to `None`.
        every_n_steps: Most steps between two full per-layer recordings,
            once training runs steadily. A full recording costs in-graph
            passes over every gradient and weight and some host-side
            arithmetic; `benchmarks/RESULTS.md` has the measured overhead.
            Defaults to `100`.
        histogram_every_n_steps: Steps between gradient histograms (a strided
            sample of up to 4096 elements per layer), or None. Defaults to `1000`.
        thresholds: Rule thresholds: None, a dict of
            `keras_actloss.diagnostics.rules.Thresholds` fields, or a
            `Thresholds`. Defaults to `None`.
        on_failure: What to do on a finding of severity `"failure"` (a
            training failure mode, or a `check_model` mistake that breaks
            training; the findings that make `keras-actloss report` exit 1):
            `"warn"` (a `GradientHealthWarning` per finding), `"stop"` (stop
            training after writing the logs) or `"raise"` (raise
            `keras_actloss.TrainingFailure`). Warnings are only warned.
            Defaults to `"warn"`.
        record_activations: Whether to record activation statistics.
            Defaults to `True`.
        heatmap_image: Whether to write a layer-by-step gradient-norm heatmap
            image at the end of training. Defaults to `False`.
        check_model: Whether to run `keras_actloss.advisor.check_model` before
            training and report its findings, and its label checks with the
            first recorded batch's labels (each output's, for a model of
            several). Defaults to `True`.
        optimizers: A list of further `keras.optimizers.Optimizer`s whose
            gradients to record: ones a custom `train_step` reaches other
            than through the model's attributes. None for only those found
            on the model. Defaults to `None`.

    Attributes:
        findings: The `Finding`s so far, in the order they appeared.
        history: The recorded `StepStats`, without gradient samples.
        layers: The monitored layers (`LayerInfo`), set when training begins.
    """

    HISTOGRAM_SIZE = 4096
    # Recordings are every step for twice this many steps at the start and
    # after a jump, then back off (`recording_gap`).
    DENSE_STEPS = 4
    # Share of a full step's time the every-step train function saves, and
    # most full steps off the schedule before it is traced.
    SENTINEL_SAVING = 0.3
    RENT_STEPS = 200
    # Most quiet steps (no alarm) left unread in the ring.
    QUIET_READ = 16

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        every_n_steps: int = 100,
        histogram_every_n_steps: int | None = 1000,
        thresholds=None,
        on_failure: str = "warn",
        record_activations: bool = True,
        heatmap_image: bool = False,
        check_model: bool = True,
        optimizers: list | None = None,
    ):
        super().__init__()
        _check_backend()
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.on_failure = on_failure
        self.record_activations = record_activations
        self.heatmap_image = heatmap_image
        self.check_model = check_model
        self.optimizers = optimizers
        check_arguments(self)
        self.thresholds = Thresholds.from_value(thresholds)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.optimizers = None if optimizers is None else list(optimizers)
        self.findings: list[Finding] = []
        self.history: list[StepStats] = []
        self.layers: list[LayerInfo] = []
        self._hooks = None
        self._writer = None
        self._logged_to = None  # The `log_dir` this instance wrote to.
        self._rules = None
        self._last_histogram = None
        self._labels_checked = False
        # Whether the recordings read the batch's labels and features for
        # the data's order (`_data_rows`): None until the first of a fit.
        self._reads_data = None
        self._input_scale, self._data_saturation = None, {}
        # The input kernels of the recurrent cells the inputs reach first
        # (`input_gates`).
        self._gates: dict = {}
        self._preprocessing: list = []
        # (`input_chains`, `input_reach`, `input_reach` on any path).
        self._inputs_reach = None
        self._kept_step = None  # The step whose batch the hooks kept.
        self._input_scales: dict[str, float] = {}
        self._upstream_scales: dict[str, float] | None = None
        self._warned_no_gradients = False
        self._first_batch = self._full_batch = None
        self._paid, self._rented = 0.0, 0
        self._deferred = self._lazy = False
        self._synced = None

    # -------------------------------------------------------------- training
    def on_train_begin(self, logs=None):
        self._cleanup()
        model = self.model
        other = _ACTIVE.get(id(model))
        if other is not None and other() not in (None, self):
            raise ValueError(
                "Expected one GradientDiagnostics per model: each would wrap "
                "the same optimizers and only one would see the gradients. "
                "Received: a second GradientDiagnostics in `fit(callbacks=...)`."
            )
        self._check_log_dir()
        _ACTIVE[id(model)] = weakref.ref(self)
        self._watch_fit_end(model)
        # On TensorFlow a model without an `Input` (subclassed, or a
        # Sequential given none) is built when `fit` first traces its train
        # function, after this call, with the optimizer's weights. Its first
        # batch runs Keras's own train function; the hooks go in before the
        # second (`_begin`), also if the model is still unbuilt then. So for
        # a built model with layers unbuilt (a layer of the user's own that
        # gives its output shape without calling its sublayers): they make
        # their weights in the first step, after the optimizer would have
        # been built without them.
        # (TensorFlow: on JAX the step is traced with the weights it makes.)
        # A model unbuilt whose layers all are (a GAN whose `train_step`
        # calls its built generator and discriminator only) is watched from
        # its first step.
        self._lazy = (
            model.built
            and keras.backend.backend() == "tensorflow"
            and _model_plan.lazy_layers(model)
        )
        self._deferred = not _model_plan.weights_made(model) or self._lazy
        self._deferred_ran = False
        self._deferred_loss = None
        if not self._deferred:
            self._begin()

    def _begin(self) -> None:
        """Plans the monitored layers and installs the hooks (a built model)."""
        model = self.model
        self._reads_data = None
        size = self.HISTOGRAM_SIZE if self._histograms_on() else 0
        spe = int(getattr(model, "steps_per_execution", 1) or 1)
        # The ring of per-step norms holds the quiet steps between two reads
        # (or one execution of several steps).
        rows = max(2 * spe, self.QUIET_READ) + 2
        hooks = self._hooks
        fresh = (
            hooks is None
            or not hooks.reusable_for(model)
            or hooks.histogram_size != size
            or hooks.ring_rows != rows
        )
        if fresh and (hooks is None or hooks.model is not model):
            # Another model: nothing of the last one carries over.
            self.findings, self.history = [], []
            self._labels_checked, self._last_histogram = False, None
        if fresh:
            plans = _model_plan.plan_layers(model)
            if not self.record_activations:
                for plan in plans:
                    plan.profile = plan.unit_variable = None
                    plan.info.units_by_sign = False
            hooks = _hooks_class()(
                model,
                plans,
                histogram_size=size,
                ring_rows=rows,
                optimizers=self.optimizers or (),
            )
            self.layers = [plan.info for plan in plans]
            self._names = [info.name for info in self.layers]
            self._rules = HealthRules(self.layers, self.thresholds)
            self._rules.uninformed_loss = uninformed_loss(model)
            self._rules.uninformed_focus = uninformed_focus(model)
            self._rules.residual_sums = _model_plan.residual_sums(model)
            scales = kernel_scales(
                plans, hooks.mean_squares, unbounded_recurrences(model)
            )
            self._rules.weight_gain = gain_of(scales)
            self._rules.relu_shrink = relu_shrink(scales)
            self._gates = input_gates(plans, self._rules.input_layers)
            self._preprocessing = input_preprocessing(model)
            self._rules.input_preprocessing = preprocessing_note(self._preprocessing)
            # A model of several inputs: each one's preprocessing and the
            # layers it reaches first (`input_scales`).
            reach = _model_plan.input_reach(model, plans)
            chains = _model_plan.input_chains(model) if reach is not None else None
            self._inputs_reach = None
            if chains is not None:
                upstream = _model_plan.input_reach(model, plans, first=False)
                self._inputs_reach = (chains, reach, upstream)
            self._rules.output_bias = output_bias(model, plans)
            self._rules.activity_regularizers = activity_regularizers(plans)
            self._rules.probability_output = probability_output(model, plans)
            self._rules.clipping = clipping(model)
            self._rules.traced_label_checks = traced_label_checks(model)
            self._rules.exponential_layers = layers_of(plans, EXPONENTIAL)
            self._rules.hidden_softmax = layers_of(plans, SOFTMAX, hidden=True)
            self._rules.weight_decay = weight_decay(model)
            self._input_scale, self._data_saturation = None, {}
            self._input_scales, self._upstream_scales = {}, None
        self._hooks = hooks
        # A `fit` of the model after this one died (TensorFlow runs no code
        # of ours then) undoes the hooks: this instance leaves the model to
        # a new one, its logs flushed.
        hooks.stale = self._cleanup
        self._spe, self._stride = spe, spe * max(1, hooks.counter_applies)
        self._rules.execution_steps = self._stride
        self._rules.forget_order()  # This fit's data may be shuffled.
        self._rules.separate_losses = hooks.separate_losses
        # With several steps per execution, a learning rate that a callback
        # raises is seen before the execution runs (`_watch_rate`).
        self._rate_variables = (
            _model_plan.rate_variables(hooks.optimizers) if spe > 1 else []
        )
        self._host_rate = None
        hooks.install(self._planned_steps(), all_full=self.every_n_steps == 1)
        if fresh:
            self._start_schedule()
        # Read at the first batch, after every callback's `on_train_begin`
        # (`BackupAndRestore` restores the step count in its own).
        self._step = None
        self._guessed = False
        self._mode = None
        self._peak = None
        self._batches = self._quiet = 0
        if self._writer is not None:
            step = hooks.step_count()
            self._writer.write_layers(self.layers, step)
            self._writer.write_layout(self.layers)
        if self.check_model:
            self._static_checks()
        self._flush()

    def _end_deferral(self) -> None:
        """Installs the hooks after the first execution, which built the
        model unseen, and judges what it left (`_judge_unseen`)."""
        self._deferred = False
        self._begin()
        self._judge_unseen(self._deferred_loss)

    def on_train_batch_begin(self, batch, logs=None):
        if self._deferred:
            if not self._deferred_ran and (self._lazy or not self.model.built):
                return  # Keras's train function builds it in this batch.
            self._end_deferral()
        if self._step is None:
            self._step = self._hooks.step_count()
            # With several optimizers, the one that counts the steps is
            # known once a step is traced (`_resync_step`).
            self._guessed = not self._hooks.counter_known
            self._hooks.reset_sentinel()
            if self._next is None:
                # Dense recording from the first step this callback sees.
                self._origin = self._next = self._step
            self._next = max(self._next, self._step)
        if self._rate_variables:
            self._watch_rate()
        last = self._step + self._stride - 1
        self._recording = self._next <= last
        mode = FULL if self._recording or not self._sentinel_pays() else SENTINEL
        if mode != self._mode:
            self._hooks.use(mode)
            self._mode = mode
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._deferred:
            self._deferred_ran = True
            self._deferred_loss = (logs or {}).get("loss")
            if self.model.built:
                # Judged now, so `on_failure` acts before the next step runs.
                self._end_deferral()
            return
        if self._guessed or (not self._batches and self._hooks.counter_applies > 1):
            self._resync_step()
        last = self._step + self._stride - 1
        # A full step keeps its batch's rows (`read_inputs`, `read_labels`):
        # a non-finite one is judged with them (one step an execution).
        self._kept_step = last if self._mode == FULL and self._stride == 1 else None
        self._step += self._stride
        self._batches += 1
        self._time_batch()
        if not self._recording:
            self._check_steps()
        elif self._record():
            self._next = last + self._gap(last)

    def on_epoch_end(self, epoch, logs=None):
        if self._hooks is not None and self._hooks.installed and self._step is not None:
            self._realign()
            self._read_all()
            self._write_peak(None)
            self._flush()

    def on_train_end(self, logs=None):
        if self._deferred:  # No batch ran: only the logs to close.
            self._deferred = False
            self._cleanup(close=True)
            return
        if self._hooks is None or not self._hooks.installed:
            return
        try:
            if self._step is not None:
                self._read_all()
            self._handle(self._rules.end_fit())
            self._write_peak(None)
            if self._writer is not None and self.heatmap_image and self.history:
                self._write_heatmap()
        finally:
            self._cleanup(close=True)
