"""The Custom Scalars layout: one chart per section, every layer in it.

TensorBoard's Scalars tab draws one chart per tag, a wall of charts on a deep
model. The Custom Scalars tab draws what a layout summary asks for; ours asks
for one multi-line chart per section (`grad_norm`, `grad_rms`, ...), each
matching every layer's tag of that section, so layers can be compared at a
glance.

TensorBoard is imported inside the functions that build its protobufs, as in
the writer: importing this module costs nothing until a layout is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from keras_actloss import registry
from keras_actloss.diagnostics.records import LayerInfo
from keras_actloss.logs import tags
from keras_actloss.logs.protos import string_tensor

CATEGORY_TITLE = "Gradient diagnostics"

_GRADIENT_SECTIONS = (tags.GRAD_NORM, tags.GRAD_RMS, tags.GRAD_MAX, tags.UPDATE_RATIO)


def _family(activation: str | None) -> tuple[bool, bool]:
    """(can have zero/dead units, can saturate) for an activation name."""
    if activation is None:
        return False, False
    profile = registry.get_profile("activation", activation)
    if profile is None:  # Unknown: keep every chart rather than miss one.
        return True, True
    return profile.inactive_below is not None, profile.saturates


def sections(layers: Sequence[LayerInfo]) -> list[str]:
    """The sections that apply to at least one of `layers`, in display order."""
    weights = any(info.has_trainable_weights for info in layers)
    zeros = saturating = False
    for info in layers:
        z, s = _family(info.activation)
        zeros, saturating = zeros or z, saturating or s or info.attention
    by_sign = any(info.units_by_sign for info in layers)
    wanted = {tags.ZERO_FRACTION: zeros, tags.DEAD_FRACTION: zeros or by_sign}
    wanted[tags.SATURATION] = saturating
    wanted.update(dict.fromkeys(_GRADIENT_SECTIONS, weights))
    return [s for s in tags.SCALAR_SECTIONS.values() if wanted[s]]


def chart_regex(section: str) -> str:
    """Regex matching every layer's tag of `section` (and `grad_norm/global`)."""
    return f"^{re.escape(section)}/"


def layout_proto(layers: Sequence[LayerInfo]):
    """The `layout_pb2.Layout` with one multi-line chart per section."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    charts = [
        layout_pb2.Chart(
            title=section,
            multiline=layout_pb2.MultilineChartContent(tag=[chart_regex(section)]),
        )
        for section in sections(layers)
    ]
    return layout_pb2.Layout(
        category=[layout_pb2.Category(title=CATEGORY_TITLE, chart=charts)]
    )


def layout_summary(layers: Sequence[LayerInfo]):
    """A `Summary` protobuf holding the layout, as the custom scalars plugin
    reads it (tag `custom_scalars__config__`)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.custom_scalar import metadata

    tensor = string_tensor(layout_proto(layers).SerializeToString())
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.CONFIG_SUMMARY_TAG,
        metadata=metadata.create_summary_metadata(),
        tensor=tensor,
    )
    return summary
