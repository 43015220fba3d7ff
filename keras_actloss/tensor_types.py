"""Type aliases shared across the package."""

from typing import Any

# Anything `keras.ops` accepts: a backend tensor, a NumPy array or a scalar.
Tensor = Any
