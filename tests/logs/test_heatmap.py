"""The NumPy heatmap renderer and its PNG encoder."""

import re

import numpy as np
import pytest
from test_without_tensorflow import decode_png

from keras_actloss.logs import heatmap

PURPLE = [68, 1, 84]  # viridis(0)
YELLOW = [253, 231, 37]  # viridis(1)
TEAL = [33, 144, 141]  # viridis(0.5)


def test_colormap_anchors_and_interpolation():
    got = heatmap.colormap(np.array([0.0, 0.5, 1.0, -3.0, 7.0]))
    assert got.tolist() == [PURPLE, TEAL, YELLOW, PURPLE, YELLOW]
    # Halfway between the first two anchors (68,1,84) and (71,44,122).
    assert heatmap.colormap(np.array(1 / 16)).tolist() == [70, 22, 103]


def test_log_scale_cells_missing_and_overflow():
    norms = np.array([[1e-4, 1e-2, 1.0], [np.nan, np.inf, 0.0]])
    image, (low, high) = heatmap.render_heatmap(norms, cell_height=2, cell_width=3)
    assert (low, high) == (-4.0, 0.0)
    assert image.shape == (4, 3 * 3 + heatmap.GAP + heatmap.BAR_WIDTH, 3)
    assert image.dtype == np.uint8
    cell = lambda r, c: image[2 * r : 2 * r + 2, 3 * c : 3 * c + 3].reshape(-1, 3)  # noqa: E731
    assert np.all(cell(0, 0) == PURPLE)  # log10 = -4, the minimum
    assert np.all(cell(0, 1) == TEAL)  # log10 = -2, the middle
    assert np.all(cell(0, 2) == YELLOW)  # log10 = 0, the maximum
    assert np.all(cell(1, 0) == heatmap.MISSING)
    assert np.all(cell(1, 1) == heatmap.OVERFLOW)
    assert np.all(cell(1, 2) == PURPLE)  # zero: below the scale
    # Colour bar: maximum at the top, minimum at the bottom.
    assert image[0, -1].tolist() == YELLOW and image[-1, -1].tolist() == PURPLE


def test_constant_input_and_default_sizes():
    image, (low, high) = heatmap.render_heatmap(np.full((3, 4), 10.0))
    assert (low, high) == (0.5, 1.5)  # log10(10) = 1, widened by 0.5 each side
    # Defaults: 256 // 3 = 85 -> clipped to 24 px a row; 512 // 4 = 128 -> 16 px.
    assert image.shape[:2] == (3 * 24, 4 * 16 + heatmap.GAP + heatmap.BAR_WIDTH)


def test_many_steps_are_downsampled_keeping_the_max():
    norms = np.ones((2, 2048))
    # 2048 = 500 * 4 + 48 columns: 48 groups of 5, then 452 of 4. Column 5
    # is in the second group.
    norms[0, 5] = 1e6
    image, (low, high) = heatmap.render_heatmap(norms, cell_height=1, cell_width=1)
    assert heatmap.MAX_COLUMNS == 500
    assert image.shape[1] == 500 + heatmap.GAP + heatmap.BAR_WIDTH
    assert (low, high) == (0.0, 6.0)
    assert image[0, 1].tolist() == YELLOW and image[0, 0].tolist() == PURPLE
    assert image[0, 2].tolist() == PURPLE and image[1, 1].tolist() == PURPLE


@pytest.mark.parametrize("shape", [(3,), (0, 4), (2, 0), (1, 2, 3)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="Received: norms with shape"):
        heatmap.render_heatmap(np.ones(shape))


def test_description_names_layers_in_order():
    text = heatmap.heatmap_description(["in", "out"], [0, 10, 20], -4.0, 0.0)
    assert "1. `in`\n2. `out`" in text
    assert "steps 0 to 20" in text and "-4.00" in text


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (300, 530, 3)])
def test_png_decodes_to_the_same_pixels(rng, shape):
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    png = heatmap.encode_png(image)
    np.testing.assert_array_equal(decode_png(png), image)
    # libpng's decoder too (TensorFlow's), where TensorFlow is installed.
    tf = pytest.importorskip("tensorflow")
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), image)


@pytest.mark.parametrize(
    ("image", "received"),
    [
        (np.zeros((2, 2, 3)), "dtype float64 and shape (2, 2, 3)"),
        (np.zeros((2, 2), np.uint8), "dtype uint8 and shape (2, 2)"),
        (np.zeros((2, 2, 4), np.uint8), "dtype uint8 and shape (2, 2, 4)"),
    ],
)
def test_png_of_anything_but_a_uint8_rgb_image_is_refused(image, received):
    with pytest.raises(ValueError, match=re.escape(f"Received: image with {received}")):
        heatmap.encode_png(image)
