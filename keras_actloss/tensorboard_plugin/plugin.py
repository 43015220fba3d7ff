"""The Gradient Health TensorBoard plugin: routes and data-provider reads.

TensorBoard finds the plugin through the `tensorboard_plugins` entry point
(`GradientHealthLoader`), so `tensorboard --logdir runs` shows a "Gradient
Health" tab. The tab is an iframe that loads `static/index.js`, which asks two
JSON routes for data:

- `GET runs`: every run, and whether it holds Gradient Health data.
- `GET health?run=<run>[&columns=<n>]`: for one run, the gradient-norm,
  dead-fraction and saturation heatmaps (layers in model order, at most
  `columns` <= `MAX_COLUMNS` step columns, each cell the largest value of
  its group of steps, as `keras_actloss.logs.downsample` groups them) and
  the findings table.

Everything is read through TensorBoard's data provider, only for the
requested run and only the tags the view needs; no route opens a file named
by the request. Bad requests get a 400, unknown runs a 404.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tensorboard import context as tb_context
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_actloss import findings as findings_lib
from keras_actloss.logs import downsample, tables, tags

PLUGIN_NAME = "gradient_health"
TAB_NAME = "Gradient Health"
_SCALARS_PLUGIN = "scalars"
_TEXT_PLUGIN = "text"
# Scalar points read per tag before bucketing into columns (TensorBoard's own
# server keeps 1000 per tag unless `--samples_per_plugin` says otherwise).
_SCALAR_DOWNSAMPLE = 10_000
_TEXT_DOWNSAMPLE = 1_000
_MAX_RUN_LENGTH = 1024

# (section, title, log colour scale), in display order.
HEATMAPS = (
    (tags.GRAD_NORM, "Gradient norm", True),
    (tags.DEAD_FRACTION, "Dead fraction", False),
    (tags.SATURATION, "Saturation", False),
)
_MODE_SECTION = {
    findings_lib.VANISHING_GRADIENTS: tags.GRAD_NORM,
    findings_lib.EXPLODING_GRADIENTS: tags.GRAD_NORM,
    findings_lib.NON_FINITE: tags.GRAD_NORM,
    findings_lib.DEAD_RELU: tags.DEAD_FRACTION,
    findings_lib.SATURATED_ACTIVATIONS: tags.SATURATION,
}
_STATIC = {
    "/index.js": ("index.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
NO_DATA_MESSAGE = tags.NO_DATA_MESSAGE  # The CLI report says the same.


class _RequestError(ValueError):
    """A request the plugin refuses; carries the HTTP status to answer."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


class GradientHealthPlugin(base_plugin.TBPlugin):
    """Serves the Gradient Health dashboard from TensorBoard's data provider.

    TensorBoard creates it through `GradientHealthLoader`; build one directly
    only to serve its routes elsewhere (tests, a custom WSGI app).

    Args:
        context: The `TBContext` TensorBoard passes to plugins; only its
            `data_provider` is used.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._provider = context.data_provider

    def get_plugin_apps(self):
        apps = {route: self._static_app(*spec) for route, spec in _STATIC.items()}
        apps["/runs"] = self._json_app(self._runs_payload)
        apps["/health"] = self._json_app(self._health_payload)
        return apps

    def is_active(self) -> bool:
        if self._provider is None:
            return False
        ctx = tb_context.RequestContext()
        return any(self._runs_with_data(ctx, "").values())

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name=TAB_NAME, disable_reload=False
        )

    # -- WSGI plumbing -------------------------------------------------------

    def _static_app(self, filename: str, content_type: str):
        path = Path(__file__).parent / "static" / filename

        @wrappers.Request.application
        def app(request):
            if request.method != "GET":
                return _error(request, "Only GET is supported.", 405)
            return http_util.Respond(request, path.read_text("utf-8"), content_type)

        return app

    def _json_app(self, payload_fn):
        @wrappers.Request.application
        def app(request):
            if request.method != "GET":
                return _error(request, "Only GET is supported.", 405)
            if self._provider is None:
                return _error(request, "TensorBoard has no data provider.", 503)
            ctx = plugin_util.context(request.environ)
            eid = plugin_util.experiment_id(request.environ)
            try:
                payload = payload_fn(ctx, eid, request.args)
            except _RequestError as e:
                return _error(request, str(e), e.code)
            return http_util.Respond(request, payload, "application/json")

        return app

    # -- Routes --------------------------------------------------------------

    def _runs_payload(self, ctx, eid, args):
        _check_params(args, allowed=())
        has_data = self._runs_with_data(ctx, eid)
        runs = sorted(
            r.run_name for r in self._provider.list_runs(ctx, experiment_id=eid)
        )
        return {
            "runs": [{"run": r, "has_data": has_data.get(r, False)} for r in runs],
            "max_columns": downsample.MAX_COLUMNS,
        }

    def _health_payload(self, ctx, eid, args):
        _check_params(args, allowed=("run", "columns"))
        run = _validate_run(args.get("run"))
        columns = _validate_columns(args.get("columns"))
        known = {r.run_name for r in self._provider.list_runs(ctx, experiment_id=eid)}
        if run not in known:
            raise _RequestError(f"Unknown run. Received: run={run!r}", code=404)
        try:
            layers = self._read_layers(ctx, eid, run)
            findings = self._read_findings(ctx, eid, run)
        except tables.TableError as e:  # `keras-actloss report` exits 2 on it.
            return {"run": run, "has_data": False, "message": str(e)}
        series = self._read_series(ctx, eid, run)
        if not layers and not series and not findings:
            return {"run": run, "has_data": False, "message": NO_DATA_MESSAGE}
        payload = {
            "run": run,
            "has_data": True,
            "layers": layers,
            "findings": findings,
            **_heatmaps(layers, series, columns),
        }
        if not payload["recorded_steps"]:
            # As `keras-actloss report` says for it: not a healthy run.
            payload["message"] = tags.NO_STEPS_MESSAGE
        return payload

    # -- Data-provider reads -------------------------------------------------

    def _runs_with_data(self, ctx, eid) -> dict[str, bool]:
        found: dict[str, bool] = {}
        scalars = self._provider.list_scalars(
            ctx, experiment_id=eid, plugin_name=_SCALARS_PLUGIN
        )
        for run, tag_map in scalars.items():
            found[run] = any(map(tags.is_diagnostics_tag, tag_map))
        texts = self._provider.list_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=_TEXT_PLUGIN,
            run_tag_filter=provider.RunTagFilter(
                tags=[tags.LAYERS_TAG, tags.FINDINGS_TAG]
            ),
        )
        for run in texts:
            found[run] = True
        return found

    def _read_text(self, ctx, eid, run: str, tag: str) -> list:
        result = self._provider.read_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=_TEXT_PLUGIN,
            downsample=_TEXT_DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        return result.get(run, {}).get(tag, [])

    def _read_layers(self, ctx, eid, run: str) -> list[dict]:
        events = self._read_text(ctx, eid, run, tags.LAYERS_TAG)
        if not events:
            return []
        latest = events[-1]  # the latest `fit`
        where = f"at step {latest.step} of run {run!r}"
        layers = tables.decode_layers(latest.numpy, where)
        table = tables.layers_table(layers)
        return [dict(zip(table[0], row)) for row in table[1:]]

    def _read_findings(self, ctx, eid, run: str) -> list[dict]:
        events = self._read_text(ctx, eid, run, tags.FINDINGS_TAG)
        pairs = [(event.step, event.numpy) for event in events]
        return [_finding(f) for f in tables.collect_findings(pairs, f"run {run!r}")]

    def _read_series(self, ctx, eid, run: str) -> dict[tuple[str, str], list]:
        listing = self._provider.list_scalars(
            ctx,
            experiment_id=eid,
            plugin_name=_SCALARS_PLUGIN,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        )
        wanted = {h[0] for h in HEATMAPS}
        tag_names = [
            t
            for t in listing.get(run, {})
            if _section(t) in wanted and tags.split_tag(t)[1] != tags.GLOBAL
        ]
        if not tag_names:
            return {}
        result = self._provider.read_scalars(
            ctx,
            experiment_id=eid,
            plugin_name=_SCALARS_PLUGIN,
            downsample=_SCALAR_DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tag_names),
        )
        return {tags.split_tag(t): d for t, d in result.get(run, {}).items()}


def _heatmaps(layers: list[dict], series: dict, max_columns: int) -> dict:
    """Buckets the series into shared step columns, one heatmap per section."""
    steps = [d.step for points in series.values() for d in points]
    groups = downsample.column_groups(steps, max_columns)
    model_order = [row["layer"] for row in layers]
    heatmaps = []
    for section, title, log_scale in HEATMAPS:
        names = [name for sec, name in series if sec == section]
        ordered = [n for n in model_order if n in names]
        ordered += sorted((n for n in names if n not in model_order), key=_natural)
        rows = [
            _rounded(
                downsample.bucket_max(
                    [d.step for d in series[section, name]],
                    [d.value for d in series[section, name]],
                    groups,
                )
            )
            for name in ordered
        ]
        heatmaps.append(
            {
                "section": section,
                "title": title,
                "log_scale": log_scale,
                "layers": ordered,
                "values": rows,
            }
        )
    return {
        "columns": groups.tolist(),
        "recorded_steps": len(set(steps)),
        "heatmaps": heatmaps,
    }


def _rounded(cells: list[float | None]) -> list[float | None]:
    """Cells to 4 significant digits (a smaller payload; the colours and
    hover text show no more)."""
    return [
        c if c is None or not math.isfinite(c) else float(f"{c:.4g}") for c in cells
    ]


def _finding(finding: findings_lib.Finding) -> dict:
    return {**finding.to_dict(), "section": _MODE_SECTION.get(finding.mode)}


def _natural(name: str) -> list:
    """Sort key putting `dense_2` before `dense_10` (Keras's naming order)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _section(tag: str) -> str | None:
    parts = tags.split_tag(tag)
    return parts[0] if parts else None


def _validate_run(run: str | None) -> str:
    """Checks a requested run name; raises `_RequestError` (400) if malformed.

    Run names are TensorBoard's (`"."`, `"train"`, `"exp1/train"`): relative,
    `/`-separated, with no `..` segment, backslash or control character.
    """
    if run is None or run == "":
        raise _RequestError(f"Expected a `run` query parameter. Received: run={run!r}")
    bad = (
        len(run) > _MAX_RUN_LENGTH
        or run.startswith("/")
        or "\\" in run
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in run)
        or ".." in run.split("/")
    )
    if bad:
        raise _RequestError(f"Expected a TensorBoard run name. Received: run={run!r}")
    return run


def _validate_columns(columns: str | None) -> int:
    """Parses the `columns` parameter: an int in [1, MAX_COLUMNS]."""
    if columns is None:
        return downsample.MAX_COLUMNS
    digits = columns.isascii() and columns.isdigit()
    if not digits or not 1 <= int(columns) <= downsample.MAX_COLUMNS:
        raise _RequestError(
            f"Expected `columns` to be an integer in [1, {downsample.MAX_COLUMNS}]. "
            f"Received: columns={columns!r}"
        )
    return int(columns)


def _check_params(args, allowed: tuple[str, ...]) -> None:
    for key in args:
        if key not in allowed:
            raise _RequestError(
                f"Expected query parameters among {list(allowed)}. "
                f"Received: {key}={args.get(key)!r}"
            )
        if len(args.getlist(key)) > 1:
            raise _RequestError(
                f"Expected one `{key}` parameter. Received: {args.getlist(key)}"
            )


def _error(request, message: str, code: int):
    body = json.dumps({"error": message})
    headers = [("Allow", "GET")] if code == 405 else None
    return http_util.Respond(
        request, body, "application/json", code=code, headers=headers
    )


class GradientHealthLoader(base_plugin.TBLoader):
    """Loads `GradientHealthPlugin`; the `tensorboard_plugins` entry point."""

    def load(self, context: base_plugin.TBContext) -> GradientHealthPlugin:
        return GradientHealthPlugin(context)
