"""Type aliases and the number checks shared across the package."""

import numbers
from typing import Any

import numpy as np

# Anything `keras.ops` accepts: a backend tensor, a NumPy array or a scalar.
Tensor = Any


def is_real(value: Any) -> bool:
    """Whether `value` is a real number, Python's or NumPy's, and not a bool
    (a bool is a Python int, and `np.bool_` passes as one in comparisons)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integral(value: Any) -> bool:
    """Whether `value` is an integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )
