"""The unhealthy run the dashboard's browser test shows, checked without a
browser: what `GradientDiagnostics` reports on it."""

from gh_logs import train_run


def test_plateau_escape_is_not_an_explosion(tmp_path):
    # Five sigmoid layers start on a plateau (global gradient norm ~3.5e-4,
    # loss ln 2); at step 3 the norm jumps ~400x while the loss stays at
    # 0.693 and then falls: a model leaving its plateau, not diverging, so
    # no `exploding_gradients` (it was reported before the loss had to rise).
    diag = train_run(str(tmp_path))
    found = {(f.mode, f.layer, f.step) for f in diag.findings}
    assert found == {
        ("deep_saturating_stack", "sigmoid_0", None),
        ("vanishing_gradients", "stem", 0),
        ("vanishing_gradients", "sigmoid_0", 0),
        ("vanishing_gradients", "sigmoid_1", 0),
        ("vanishing_gradients", "sigmoid_2", 0),
        ("dead_relu", "relu_head", 0),
    }
