"""TensorBoard I/O of `GradientDiagnostics`, shared by the CLI and the dashboard.

- `tags`: the event-file layout (the contract).
- `writer`: writes records as events; `layout`: the Custom Scalars layout;
  `heatmap`: the layer x step gradient-norm image.
- `tables`: encodes and decodes the `diagnostics/layers` and
  `diagnostics/findings` tables.
- `downsample`: the step columns of long runs (heatmap image and dashboard).
- `events`: event files on disk, checked record by record.
- `reader`: a run's event files back into Python, for the CLI report.

Statistics are computed elsewhere (`keras_actloss.diagnostics`); this package
only writes and reads event files.
"""
