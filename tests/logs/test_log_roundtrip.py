"""Writer -> event files -> reader, checked with TensorBoard's own reader."""

import math
import os
import re

import numpy as np
import pytest
from log_run import FINDINGS, LAYERS, stats_at, write_run
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata
from tensorboard.util import tensor_util

from keras_actloss.diagnostics.records import (
    LayerInfo,
    LayerStats,
    SentinelEvent,
    StepStats,
)
from keras_actloss.findings import Finding
from keras_actloss.logs import events, reader
from keras_actloss.logs.heatmap import render_heatmap
from keras_actloss.logs.writer import (
    DiagnosticsWriter,
    EventFile,
    event_bytes,
    float32_bytes,
    scalar_value_prefix,
)


def accumulator(log_dir):
    return ea.EventAccumulator(
        os.path.join(log_dir, "train"), size_guidance={ea.TENSORS: 0}
    ).Reload()


EXPECTED_TAGS = {
    "grad_norm/global",
    "grad_norm/dense", "grad_rms/dense", "grad_max/dense", "update_ratio/dense",
    "zero_fraction/dense", "dead_fraction/dense",
    "saturation/outer/act",
    "grad_norm/dense_1", "grad_rms/dense_1", "grad_max/dense_1", "update_ratio/dense_1",
    "grad_hist/dense", "grad_hist/dense_1",
    "diagnostics/layers", "diagnostics/findings",
    "custom_scalars__config__",
}  # fmt: skip


def test_exact_tags_and_values(tmp_path):
    write_run(str(tmp_path))
    acc = accumulator(str(tmp_path))
    assert set(acc.Tags()["tensors"]) == EXPECTED_TAGS
    assert set(acc.PluginTagToContent("scalars")) == {
        t for t in EXPECTED_TAGS if not t.startswith(("grad_hist", "diag", "custom"))
    }
    assert set(acc.PluginTagToContent("histograms")) == {
        "grad_hist/dense",
        "grad_hist/dense_1",
    }
    assert set(acc.PluginTagToContent("text")) == {
        "diagnostics/layers",
        "diagnostics/findings",
    }

    def values(tag):
        return [
            (e.step, tensor_util.make_ndarray(e.tensor_proto).item())
            for e in acc.Tensors(tag)
        ]

    # Scalars are float32 tensors, written at the recording's step.
    assert values("grad_norm/dense") == [(0, 0.0), (5, 1.25), (10, 2.5)]
    assert values("saturation/outer/act") == [(0, 0.0), (5, 0.3125), (10, 0.625)]
    assert values("update_ratio/dense") == [
        (s, float(np.float32(1e-3 * (s + 1)))) for s in (0, 5, 10)
    ]
    # Recordings at 0, 5, 10 plus the sentinel event at step 7.
    assert sorted(values("grad_norm/global")) == [
        (0, 1.5),
        (5, 6.5),
        (7, 42.0),
        (10, 11.5),
    ]


def test_histograms(tmp_path):
    write_run(str(tmp_path))
    acc = accumulator(str(tmp_path))
    (event,) = acc.Tensors("grad_hist/dense")
    buckets = tensor_util.make_ndarray(event.tensor_proto)
    # 30 buckets over [0, 3] (values 0, 1, 2, 3): width 0.1; counts at the
    # buckets holding 0, 1, 2 and (the closed last bucket) 3.
    assert event.step == 5
    assert buckets.shape == (30, 3)
    np.testing.assert_allclose(buckets[0, :2], [0.0, 0.1])
    np.testing.assert_allclose(buckets[-1, :2], [2.9, 3.0])
    assert np.flatnonzero(buckets[:, 2]).tolist() == [0, 10, 20, 29]
    # The NaN is left out: one finite value.
    (event,) = acc.Tensors("grad_hist/dense_1")
    assert tensor_util.make_ndarray(event.tensor_proto)[:, 2].sum() == 1


def test_custom_scalars_layout(tmp_path):
    write_run(str(tmp_path))
    acc = accumulator(str(tmp_path))
    (event,) = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)
    assert acc.SummaryMetadata(
        cs_metadata.CONFIG_SUMMARY_TAG
    ).plugin_data.plugin_name == ("custom_scalars")
    layout = layout_pb2.Layout.FromString(
        tensor_util.make_ndarray(event.tensor_proto).item()
    )
    (category,) = layout.category
    charts = {c.title: list(c.multiline.tag) for c in category.chart}
    # One chart per section; every scalar tag lands in exactly its section's chart.
    assert list(charts) == [
        "grad_norm", "grad_rms", "grad_max", "update_ratio",
        "zero_fraction", "dead_fraction", "saturation",
    ]  # fmt: skip
    for tag in acc.PluginTagToContent("scalars"):
        matched = [
            t
            for t, regexes in charts.items()
            if any(re.search(r, tag) for r in regexes)
        ]
        assert matched == [tag.split("/")[0]]


@pytest.mark.parametrize("by_sign", [False, True])
@pytest.mark.parametrize("saturating", ["sigmoid", "attention"])
def test_layout_sections_follow_the_layers(tmp_path, by_sign, saturating):
    # A linear layer judged by sign (`units_by_sign`) has dead units, not
    # zero outputs: its section is `dead_fraction`'s alone. An attention's
    # weights (no activation name) have a saturation, as a sigmoid layer.
    layers = [LayerInfo("d", "Dense", "sigmoid", True, 0)]
    if saturating == "attention":
        layers = [
            LayerInfo("a/query", "EinsumDense", None, True, 0),
            LayerInfo("a", "MultiHeadAttention", None, False, 1, attention=True),
        ]
    if by_sign:
        layers.append(LayerInfo("b/d", "Dense", None, True, 2, units_by_sign=True))
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_layout(layers)
    acc = accumulator(str(tmp_path))
    (event,) = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(
        tensor_util.make_ndarray(event.tensor_proto).item()
    )
    titles = [c.title for c in layout.category[0].chart]
    dead = ["dead_fraction"] if by_sign else []
    assert titles == [
        "grad_norm",
        "grad_rms",
        "grad_max",
        "update_ratio",
        *dead,
        "saturation",
    ]


def test_heatmap_only_when_written(tmp_path):
    write_run(str(tmp_path / "plain"))
    assert (
        "diagnostics/grad_norm_heatmap"
        not in accumulator(str(tmp_path / "plain")).Tags()["tensors"]
    )
    write_run(str(tmp_path / "img"), heatmap=True)
    acc = accumulator(str(tmp_path / "img"))
    assert set(acc.Tags()["tensors"]) == EXPECTED_TAGS | {
        "diagnostics/grad_norm_heatmap"
    }
    (event,) = acc.Tensors("diagnostics/grad_norm_heatmap")
    width, height, png = tensor_util.make_ndarray(event.tensor_proto)
    # Decoded by TensorFlow's (libpng's) decoder; test_without_tensorflow.py
    # decodes it without TensorFlow.
    tf = pytest.importorskip("tensorflow")
    decoded = tf.io.decode_png(png).numpy()
    expected, _ = render_heatmap([[0, 1.25, 2.5], [2, 2, 2]])
    assert (int(width), int(height)) == (expected.shape[1], expected.shape[0])
    np.testing.assert_array_equal(decoded, expected)
    assert event.step == 10
    assert reader.read_run(str(tmp_path / "img")).has_heatmap


def test_reader_round_trip(tmp_path):
    write_run(str(tmp_path))
    run = reader.read_run(str(tmp_path))
    assert run.name == os.path.basename(str(tmp_path))
    assert run.layers == LAYERS
    # Findings come back equal, in step order (None -> step 0 first).
    assert run.findings == [FINDINGS[2], FINDINGS[0], FINDINGS[1]]
    assert run.series("grad_norm", "dense") == [(0, 0.0), (5, 1.25), (10, 2.5)]
    assert run.series("grad_norm", "global") == [
        (0, 1.5),
        (5, 6.5),
        (7, 42.0),
        (10, 11.5),
    ]
    assert run.series("dead_fraction", "dense_1") == []
    assert run.histogram_tags == ["grad_hist/dense", "grad_hist/dense_1"]
    assert not run.has_heatmap


def test_summarize(tmp_path):
    write_run(str(tmp_path))
    rows = reader.summarize(reader.read_run(str(tmp_path)))
    assert [r["layer"] for r in rows] == ["dense", "outer/act", "dense_1"]
    dense, act, dense_1 = rows
    # grad_norm/dense = 0.25 * step over steps 0, 5, 10.
    assert (dense["grad_norm_first"], dense["grad_norm_last"]) == (0.0, 2.5)
    assert (dense["grad_norm_min"], dense["grad_norm_max"]) == (0.0, 2.5)
    assert (dense["zero_fraction"], dense["dead_fraction"], dense["saturation"]) == (
        0.5, 0.125, None,
    )  # fmt: skip
    assert act["grad_norm_first"] is None and act["saturation"] == 0.625
    assert dense_1["grad_norm_max"] == 2.0 and dense_1["zero_fraction"] is None


def test_summarize_ignores_non_finite_in_min_max(tmp_path):
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_layers(LAYERS[:1])
        for step, norm in enumerate([3.0, math.inf, 1.0, math.nan]):
            writer.write_stats(
                StepStats(step, norm, layers=[LayerStats("dense", grad_norm=norm)])
            )
    (row,) = reader.summarize(reader.read_run(str(tmp_path)))
    assert row["grad_norm_first"] == 3.0 and math.isnan(row["grad_norm_last"])
    assert (row["grad_norm_min"], row["grad_norm_max"]) == (1.0, 3.0)


def test_readable_without_close(tmp_path):
    # A crash (no close) loses nothing already written: every write flushes.
    writer = DiagnosticsWriter(str(tmp_path))
    writer.write_layers(LAYERS)
    writer.write_stats(stats_at(3))
    writer.write_findings(FINDINGS[:1])
    run = reader.read_run(str(tmp_path))
    assert run.series("grad_norm", "dense") == [(3, 0.75)]
    assert run.findings == FINDINGS[:1]
    writer.close()
    writer.close()  # Idempotent: the file is closed once, nothing is added.
    (path,) = events.event_files(str(tmp_path / "train"))
    assert events.check_file(path) is None
    assert len(list(events.read_events(path))) == 4  # version, 3 writes


def test_layers_fallback_without_table(tmp_path):
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_stats(stats_at(1))
    run = reader.read_run(str(tmp_path))
    assert [(i.name, i.has_trainable_weights) for i in run.layers] == [
        ("dense", True), ("outer/act", False), ("dense_1", True),
    ]  # fmt: skip


def test_find_runs(tmp_path):
    for name in ("b", "a", "nested/c"):
        write_run(str(tmp_path / name))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    expected = [str(tmp_path / n) for n in ("a", "b", "nested/c")]
    assert reader.find_runs(str(tmp_path)) == expected
    assert reader.find_runs(str(tmp_path / "a")) == [str(tmp_path / "a")]
    # A directory holding event files directly is a run too.
    train = str(tmp_path / "a" / "train")
    assert reader.find_runs(train) == [train]
    assert reader.read_run(train).layers == LAYERS


def test_missing_and_empty_log_dirs(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        reader.find_runs(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        reader.read_run(missing)
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=re.escape(repr(empty))):
        reader.find_runs(empty)
    with pytest.raises(ValueError, match=re.escape(repr(empty))):
        reader.read_run(empty)


def test_writer_bad_log_dir(tmp_path):
    with pytest.raises(ValueError, match="Received: log_dir=None"):
        DiagnosticsWriter(None)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = DiagnosticsWriter(str(blocker / "run"))
    with pytest.raises(OSError):
        writer.open()
    assert not os.path.exists(str(blocker / "run"))


def test_writer_is_lazy(tmp_path):
    writer = DiagnosticsWriter(str(tmp_path / "run"))
    assert not os.path.exists(str(tmp_path / "run"))
    writer.close()
    assert writer.open() is writer and writer.open() is writer
    assert os.path.isdir(str(tmp_path / "run" / "train"))
    writer.write_sentinel(SentinelEvent(3, 1.5, False))
    writer.close()
    # Opened once: one event file, its `file_version` event and the scalar.
    (path,) = events.event_files(str(tmp_path / "run" / "train"))
    written = list(events.read_events(path))
    assert [e.file_version for e in written] == ["brain.Event:2", ""]
    assert written[1].step == 3
    # Opened and closed without a write: no empty event file is left.
    again = DiagnosticsWriter(str(tmp_path / "again")).open()
    again.close()
    assert events.event_files(str(tmp_path / "again" / "train")) == []


def test_event_file_format(tmp_path):
    # TensorBoard's own loader reads the file: a `file_version` event first,
    # then one event per write with its step and summary. Two files opened
    # in the same second get distinct names.
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import summary_pb2

    first, second = EventFile(str(tmp_path)), EventFile(str(tmp_path))
    assert first.path != second.path
    assert "keras_actloss" in os.path.basename(first.path)
    summary = summary_pb2.Summary()
    summary.value.add(tag="grad_norm/dense").simple_value = 0.25
    first.write(summary, 7)
    # Readable before close: every write is flushed.
    events = list(event_file_loader.LegacyEventFileLoader(first.path).Load())
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events[1:]] == [7]
    assert events[1].summary == summary
    first.close()
    second.close()
    # Closing writes nothing more; the unwritten file holds its header only.
    assert len(list(event_file_loader.LegacyEventFileLoader(first.path).Load())) == 2
    (header,) = event_file_loader.LegacyEventFileLoader(second.path).Load()
    assert header.file_version == "brain.Event:2"


@pytest.mark.parametrize(
    "tag",
    [
        "grad_norm/dense",
        "update_ratio/" + "very_long_layer_name" * 8,
        "zero_fraction/Ä",
    ],
)
def test_scalar_wire_bytes_match_protobuf(tag):
    # The cached wire bytes parse as, and equal, what the protobuf library
    # serializes for the same float32 scalar (tags over 127 bytes need a
    # two-byte length).
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

    values = [0.25, -3.5e-8, 1e300, float("inf"), float("nan")]
    packed = float32_bytes(values)
    for i, value in enumerate(values):
        wire = scalar_value_prefix(tag) + packed[4 * i : 4 * i + 4]
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        tensor.tensor_shape.SetInParent()
        tensor.float_val.append(value)
        expected = summary_pb2.Summary()
        expected.value.add(tag=tag, tensor=tensor)
        if math.isnan(value):
            (parsed,) = summary_pb2.Summary.FromString(wire).value
            assert parsed.tag == tag and math.isnan(parsed.tensor.float_val[0])
        else:
            assert wire == expected.SerializeToString()
    assert np.frombuffer(packed, "<f4")[2] == np.inf  # 1e300 overflows.


@pytest.mark.parametrize(
    "values",
    [
        [0.1, -2.0, 3, 1e-40, -0.0, 3.4028235e38, 1 / 3],
        [1.0, 1e300, -1e300, 2.0],  # Beyond float32: infinity, as NumPy.
        [],
    ],
)
def test_float32_bytes_match_numpy(values):
    # Reference: NumPy's float64 -> float32 cast (round to nearest even;
    # overflow to infinity).
    with np.errstate(over="ignore"):
        expected = np.asarray(values, "float64").astype("<f4").tobytes()
    assert float32_bytes(values) == expected


@pytest.mark.parametrize("step", [0, 7, 300, 2**40, -1])
def test_event_bytes_match_protobuf(step):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary()
    summary.value.add(tag="grad_norm/global").simple_value = 0.75
    wire = summary.SerializeToString()
    expected = event_pb2.Event(wall_time=1795462000.123456, step=step)
    expected.summary.CopyFrom(summary)
    assert event_bytes(wire, step, 1795462000.123456) == expected.SerializeToString()


def test_event_wire_bytes_match_protobuf(tmp_path):
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2, summary_pb2

    assert event_pb2.Event.DESCRIPTOR.fields_by_name["summary"].number == 5
    summary = summary_pb2.Summary()
    summary.value.add(tag="a").simple_value = 1.5
    events = EventFile(str(tmp_path))
    events.write_serialized(summary.SerializeToString(), 2**40)
    events.close()
    (_, event) = event_file_loader.LegacyEventFileLoader(events.path).Load()
    assert event.step == 2**40 and event.summary == summary


def test_several_event_files_in_one_run(tmp_path):
    # A second `fit` (or keras.callbacks.TensorBoard sharing `train/`) adds
    # event files; the reader sees all of them.
    tf = pytest.importorskip("tensorflow")  # The file Keras's callback writes.

    write_run(str(tmp_path))
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_stats(stats_at(15))
        writer.write_findings([Finding("dead_relu", "dense_1", 15, 1.0, "m", "f")])
    keras_writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with keras_writer.as_default():
        tf.summary.scalar("epoch_loss", 0.5, step=0)
    keras_writer.close()
    assert len(os.listdir(str(tmp_path / "train"))) == 3
    run = reader.read_run(str(tmp_path))
    assert [s for s, _ in run.series("grad_norm", "dense")] == [0, 5, 10, 15]
    assert run.findings[-1] == Finding("dead_relu", "dense_1", 15, 1.0, "m", "f")
    assert run.scalars["epoch_loss"] == [(0, 0.5)]
    assert run.layers == LAYERS


def test_text_tab_renders_the_findings_as_a_table(tmp_path):
    # What TensorBoard's Text tab shows for our 2-D string tensor.
    from tensorboard.plugins.text import text_plugin

    write_run(str(tmp_path))
    acc = accumulator(str(tmp_path))
    (event,) = [e for e in acc.Tensors("diagnostics/findings") if e.step == 10]
    html = text_plugin.text_array_to_html(
        tensor_util.make_ndarray(event.tensor_proto), enable_markdown=True
    )
    assert html.count("<table>") == 1 and html.count("<tr>") == 3  # header + 2
    for column in ("mode", "layer", "step", "value", "severity", "message", "fix"):
        assert f"<td><p>{column}</p></td>" in html
    assert "exploding_gradients" in html and repr(FINDINGS[1].value) in html


def _last_table_per_step(log_dir):
    """What TensorBoard's data server shows: the last findings event of a step."""
    last = {}
    for event in accumulator(log_dir).Tensors("diagnostics/findings"):
        last[event.step] = tensor_util.make_ndarray(event.tensor_proto)
    return {
        step: [row[0].decode() for row in table[1:]] for step, table in last.items()
    }


def test_findings_of_one_step_written_in_several_calls(tmp_path):
    before = Finding("sigmoid_stack", "dense", None, None, "Risk.", "Fix.", "warning")
    vanishing = Finding("vanishing_gradients", "dense", 0, 1e-6, "m", "f")
    dead = Finding("dead_relu", "dense_1", 0, 0.75, "m", "f")
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_findings([before])
        writer.write_findings([vanishing])
        writer.write_findings([dead, vanishing])  # `vanishing` is not repeated
    # The last event at step 0 holds all three; three events in all.
    assert _last_table_per_step(str(tmp_path)) == {
        0: ["sigmoid_stack", "vanishing_gradients", "dead_relu"]
    }
    assert len(accumulator(str(tmp_path)).Tensors("diagnostics/findings")) == 3
    assert reader.read_run(str(tmp_path)).findings == [before, vanishing, dead]


def test_a_finding_confirmed_late_joins_the_latest_step_written(tmp_path):
    # An explosion reported from step 3 after the dead units found at step 7
    # were written: TensorBoard's data server takes a step going backwards
    # for a restart and drops the later events, so the finding is written at
    # step 7, its own step kept in the table's step column.
    dead = Finding("dead_relu", "dense_1", 7, 0.75, "m", "f")
    exploding = Finding("exploding_gradients", None, 3, 1e3, "m", "f")
    vanishing = Finding("vanishing_gradients", "dense", 12, 1e-6, "m", "f")
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_findings([dead])
        writer.write_findings([exploding])
        writer.write_findings([vanishing, dead])
    steps = [e.step for e in accumulator(str(tmp_path)).Tensors("diagnostics/findings")]
    assert steps == [7, 7, 12]
    assert _last_table_per_step(str(tmp_path)) == {
        7: ["dead_relu", "exploding_gradients"],
        12: ["vanishing_gradients"],
    }
    assert reader.read_run(str(tmp_path)).findings == [dead, exploding, vanishing]


def test_second_writer_extends_the_run(tmp_path):
    # A second `fit`: a new writer (new event file) in the same run.
    first = Finding("dead_relu", "dense", 0, 1.0, "m", "f")
    again = Finding("sigmoid_stack", "dense", None, None, "Risk.", "Fix.", "warning")
    later = Finding("exploding_gradients", None, 40, 1e3, "m", "f")
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_findings([first])
    with DiagnosticsWriter(str(tmp_path)) as writer:
        writer.write_findings([again, later])
    assert _last_table_per_step(str(tmp_path)) == {
        0: ["dead_relu", "sigmoid_stack"],
        40: ["exploding_gradients"],
    }
    assert reader.read_run(str(tmp_path)).findings == [first, again, later]
    assert events.findings_by_step(str(tmp_path / "train")) == {
        0: [first, again],
        40: [later],
    }
    assert events.findings_by_step(str(tmp_path / "nope")) == {}
    # The files in `skip` are not read: the second writer's, then both.
    files = events.event_files(str(tmp_path / "train"))
    assert len(files) == 2
    assert events.findings_by_step(str(tmp_path / "train"), skip=files[1:]) == {
        0: [first]
    }
    assert events.findings_by_step(str(tmp_path / "train"), skip=files) == {}
