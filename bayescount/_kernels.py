"""Numba kernels that pytensor lacks.

pytensor ships ``tri_gamma`` only as C code, so under the numba linker it
falls back to object mode (~40x slower). The NB log-density's second
derivative in the dispersion needs it on every MAP Newton step.
"""

from __future__ import annotations

import math

from pytensor.link.numba.dispatch import basic as numba_basic
from pytensor.link.numba.dispatch.scalar import register_scalar_funcify, scalar_op_cache_key
from pytensor.scalar.math import TriGamma


@register_scalar_funcify(TriGamma)
def _numba_funcify_trigamma(op, node, **kwargs):
    @numba_basic.numba_njit
    def trigamma(x):
        # Recurrence up to x >= 10, then the asymptotic series (|rel err| < 1e-12).
        if x <= 0.0:
            return math.nan
        acc = 0.0
        z = x
        while z < 10.0:
            acc += 1.0 / (z * z)
            z += 1.0
        w = 1.0 / (z * z)
        tail = (w / z) * (1.0 / 6.0 + w * (-1.0 / 30.0 + w * (1.0 / 42.0 + w * (-1.0 / 30.0 + w * 5.0 / 66.0))))
        return acc + 1.0 / z + 0.5 * w + tail

    return trigamma, scalar_op_cache_key(op, cache_version="bayescount.trigamma.v1")
