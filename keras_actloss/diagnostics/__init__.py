"""Gradient and activation statistics and the rules that judge them.

Nothing here imports TensorBoard: statistics and rules are pure; the
`keras_actloss.logs` package does the I/O.
"""
