"""Loss profiles and `keras_actloss.losses.get`."""

import math

import keras
import numpy as np
import pytest

from keras_actloss import losses, registry
from keras_actloss.losses import profiles as loss_profiles


def test_every_registered_loss_and_function_has_a_profile():
    for kind in ("loss", "loss_function"):
        for name in registry.entries(kind):
            assert registry.get_profile(kind, name) is not None, name


def test_profile_resolves_from_logits():
    cases = [
        (losses.BinaryCrossentropy(), "probabilities", ("sigmoid",)),
        (losses.BinaryCrossentropy(from_logits=True), "logits", ("linear",)),
        (losses.CategoricalCrossentropy(), "probabilities", ("softmax",)),
        (losses.CategoricalCrossentropy(from_logits=True), "logits", ("linear",)),
        (losses.SparseCategoricalCrossentropy(), "probabilities", ("softmax",)),
        (losses.SparseCategoricalCrossentropy(True), "logits", ("linear",)),
        (keras.losses.BinaryCrossentropy(from_logits=True), "logits", ("linear",)),
        (keras.losses.CategoricalCrossentropy(), "probabilities", ("softmax",)),
        (keras.losses.SparseCategoricalCrossentropy(True), "logits", ("linear",)),
        (losses.KLDivergence(), "probabilities", ("softmax",)),
        (losses.Hinge(), "values", ("linear", "tanh")),
    ]
    for loss, expects, outputs in cases:
        p = losses.profile(loss)
        assert (p.expects, p.output_activations) == (expects, outputs), loss
        assert p.from_logits == getattr(loss, "from_logits", None), loss


def test_profile_by_name_class_instance_and_function():
    cases = [
        ("mse", "mean_squared_error"),
        ("MeanAbsoluteError", "mean_absolute_error"),
        ("huber", "huber"),
        ("keras_actloss>Huber", "huber"),
        ("kld", "kl_divergence"),
        ("bce", "binary_crossentropy"),
        (losses.huber, "huber"),
        (losses.Huber, "huber"),
        (losses.Huber(delta=2.0), "huber"),
        (keras.losses.Huber(), "huber"),
        (keras.losses.huber, "huber"),
        (keras.losses.Hinge, "hinge"),
        (keras.losses.get("MeanSquaredError"), "mean_squared_error"),
    ]
    for identifier, name in cases:
        assert losses.profile(identifier).name == name, identifier


def test_regression_profiles_pair_with_unbounded_outputs():
    for identifier in ("mse", "mae", "huber"):
        p = losses.profile(identifier)
        assert p.task == "regression" and p.expects == "values"
        assert "linear" in p.output_activations
        assert "sigmoid" not in p.output_activations
    assert losses.profile("mae").robust_to_outliers
    assert not losses.profile("mse").robust_to_outliers


def test_every_keras_alias_resolves_through_keras_get():
    for expected, names in loss_profiles.KERAS_NAMES.items():
        for name in names:
            if name in ("huber_loss", "kullback_leibler_divergence"):
                continue  # not accepted by keras.losses.get
            assert losses.profile(keras.losses.get(name)) == expected, name
            assert losses.profile(name) == expected, name


def test_unknown_losses_have_no_profile():
    def huber(y_true, y_pred):  # a user function that merely shares a name
        return y_pred

    assert losses.profile(huber) is None
    assert losses.profile(lambda y, p: p) is None
    assert losses.profile("not_a_loss") is None
    assert losses.profile(keras.losses.CosineSimilarity()) is None


def test_poisson_takes_rates_above_zero():
    # keras.losses.poisson is mean(y_pred - y_true * log(y_pred + 1e-7)):
    # NaN for a prediction below -1e-7, so a rate above 0 is its domain.
    p = losses.profile(keras.losses.Poisson())
    assert p == losses.profile("poisson") == loss_profiles.POISSON
    assert (p.task, p.label_format) == ("regression", "count")
    assert p.prediction_range == (0.0, math.inf)
    value = keras.losses.poisson(np.array([[2.0]]), np.array([[-0.5]]))
    assert np.isnan(keras.ops.convert_to_numpy(value)).all()
    assert losses.profile("mse").prediction_range == (-math.inf, math.inf)


def test_get_returns_functions_instances_and_callables():
    assert losses.get("huber") is losses.huber
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get("keras_actloss>kl_divergence") is losses.kl_divergence
    assert isinstance(losses.get("Huber"), losses.Huber)
    assert isinstance(losses.get("keras_actloss>Huber"), losses.Huber)
    assert isinstance(
        losses.get("sparsecategoricalcrossentropy"),
        losses.SparseCategoricalCrossentropy,
    )
    assert isinstance(losses.get(losses.Hinge), losses.Hinge)
    loss = losses.Huber(delta=2.0)
    assert losses.get(loss) is loss
    assert losses.get(None) is None


@pytest.mark.parametrize(
    "alias", ["mse", "MSE", "mae", "MAE", "bce", "BCE", "kld", "KLD"]
)
def test_get_takes_keras_short_aliases(alias):
    # `keras.losses.get` takes both cases; ours gives our function of the
    # same name as Keras's.
    theirs = keras.losses.get(alias)
    assert losses.get(alias) is getattr(losses, theirs.__name__)
    assert losses.get(f"keras_actloss>{alias}") is losses.get(alias)


def test_get_deserialises_configs():
    config = keras.saving.serialize_keras_object(losses.Huber(delta=2.5))
    restored = losses.get(config)
    assert isinstance(restored, losses.Huber) and restored.delta == 2.5
    short = losses.get(
        {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}
    )
    assert isinstance(short, losses.BinaryCrossentropy) and short.from_logits
