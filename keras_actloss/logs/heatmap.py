"""A layer x step heatmap of gradient norms as an RGB image, in NumPy.

For users without the Gradient Health dashboard: `GradientDiagnostics` can
write this image so TensorBoard's Images tab shows, at a glance, which layer
from which step has vanishing or exploding gradients. Rows are layers in model
order (input at the top), columns are recorded steps, colour is `log10` of the
gradient norm on a viridis-like scale (dark = small), with a colour bar on the
right. Missing values are grey, infinite ones red. A long run is drawn with
at most `MAX_COLUMNS` columns, each the largest norm of its group of steps,
as in the Gradient Health dashboard (`keras_actloss.logs.downsample`). No
matplotlib, no fonts: the text goes into the summary's description; no
TensorFlow: `encode_png` writes the PNG with `zlib`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from keras_actloss.logs.downsample import MAX_COLUMNS, downsample_columns

# Viridis sampled at 0, 1/8, ..., 1 (matplotlib's `viridis` colormap).
_ANCHORS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)
MISSING = (128, 128, 128)
OVERFLOW = (220, 20, 20)
BAR_WIDTH = 12
GAP = 4


def colormap(fraction) -> np.ndarray:
    """Maps values in [0, 1] (clipped) to uint8 RGB by linear interpolation.

    Examples:

    >>> keras_actloss.logs.heatmap.colormap(np.array([0.0, 1.0])).tolist()
    [[68, 1, 84], [253, 231, 37]]

    Args:
        fraction: Array of any shape (NaN is drawn as 0).

    Returns:
        uint8 array of shape `fraction.shape + (3,)`.
    """
    x = np.nan_to_num(np.asarray(fraction, dtype=np.float64), nan=0.0)
    x = np.clip(x, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(_ANCHORS) - 2)
    weight = (x - low)[..., np.newaxis]
    rgb = _ANCHORS[low] * (1.0 - weight) + _ANCHORS[low + 1] * weight
    return np.round(rgb).astype(np.uint8)


def render_heatmap(
    norms, cell_height: int | None = None, cell_width: int | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Renders `[layers, steps]` gradient norms as an RGB image.

    Examples:

    >>> image, (low, high) = keras_actloss.logs.heatmap.render_heatmap(
    ...     np.array([[1e-6, 1e-5], [1e-2, 1.0]]), cell_height=1, cell_width=1)
    >>> image.shape, low, high
    ((2, 18, 3), -6.0, 0.0)
    >>> image[0, 0].tolist(), image[1, 1].tolist()
    ([68, 1, 84], [253, 231, 37])

    Args:
        norms: Array-like of shape `[layers, steps]`; NaN marks a missing
            value, an infinity an overflow, zero is drawn as the smallest.
        cell_height: Pixels per layer. Defaults to fit about 256 pixels
            (between 4 and 24).
        cell_width: Pixels per step. Defaults to fit about 512 pixels
            (between 1 and 16).

    Returns:
        `(image, (low, high))`: a uint8 array `[height, width, 3]` and the
        `log10` range that the colour scale spans.
    """
    values = np.asarray(norms, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(
            "Expected `norms` of shape [layers, steps] with at least one of "
            f"each. Received: norms with shape {values.shape}"
        )
    values = downsample_columns(np.abs(values), MAX_COLUMNS)
    rows, cols = values.shape
    cell_height = cell_height or int(np.clip(256 // rows, 4, 24))
    cell_width = cell_width or int(np.clip(512 // cols, 1, 16))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(values)
    usable = logs[np.isfinite(logs)]
    low, high = (float(usable.min()), float(usable.max())) if usable.size else (0, 1)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    cells = colormap((logs - low) / (high - low))
    cells[np.isnan(values)] = MISSING
    cells[np.isposinf(values)] = OVERFLOW
    image = np.repeat(np.repeat(cells, cell_height, axis=0), cell_width, axis=1)
    bar = colormap(np.linspace(1.0, 0.0, image.shape[0]))[:, np.newaxis, :]
    gap = np.full((image.shape[0], GAP, 3), 255, dtype=np.uint8)
    bar = np.repeat(bar, BAR_WIDTH, axis=1)
    return np.concatenate([image, gap, bar], axis=1), (low, high)


def heatmap_description(
    layer_names: Sequence[str], steps: Sequence[int], low: float, high: float
) -> str:
    """Markdown description of the image: axes, layer order and colour scale."""
    first, last = (steps[0], steps[-1]) if len(steps) else ("-", "-")
    layers = "\n".join(f"{i}. `{name}`" for i, name in enumerate(layer_names, 1))
    return (
        f"Gradient norm per layer (rows, top = input side) and recorded step "
        f"(columns, steps {first} to {last}). Colour: log10(norm) from "
        f"{low:.2f} (dark purple) to {high:.2f} (yellow), bar on the right; "
        f"grey = not recorded, red = infinite.\n\nLayers:\n\n{layers}"
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC-32 of type and data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(image) -> bytes:
    """The PNG file of a uint8 RGB image, without TensorFlow.

    8-bit truecolour, no interlacing, every row unfiltered (filter type 0)
    and the rows deflated with `zlib`: what any PNG decoder reads back as the
    same pixels (`tf.io.decode_png` included), a little larger than
    libpng's output.

    Examples:

    >>> png = keras_actloss.logs.heatmap.encode_png(np.zeros((2, 3, 3), np.uint8))
    >>> png[1:4], png[12:16]  # the signature's name; the first chunk
    (b'PNG', b'IHDR')
    >>> int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # w, h
    (3, 2)

    Args:
        image: Array-like of shape `[height, width, 3]` and dtype uint8.

    Returns:
        The PNG file's bytes.

    Reference:
    - [PNG specification](https://www.w3.org/TR/png-3/)
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(
            "Expected a uint8 image of shape [height, width, 3]. Received: "
            f"image with dtype {pixels.dtype} and shape {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), np.uint8)  # Filter byte 0 first.
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _chunk(b"IEND", b""),
        ]
    )
