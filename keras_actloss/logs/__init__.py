"""TensorBoard I/O: the tag layout, the writer and the reader.

Statistics are computed elsewhere (`keras_actloss.diagnostics`); this package
only writes and reads event files.
"""
