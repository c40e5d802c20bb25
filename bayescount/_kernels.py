"""Numba kernels that pytensor lacks.

pytensor ships ``tri_gamma`` only as C code, so under the numba linker it
falls back to object mode (~40x slower). The NB log-density's second
derivative in the dispersion needs it on every MAP Newton step.

The NB log-density's ``lgamma(y + r) - lgamma(r)`` and its derivatives in
``r`` are differences of special functions at integer ``y``. Counts are
mostly small (single-cell data: mostly 0 to 5), where the difference is a
short product or sum: ``log prod_{j<y} (r + j)``, ``sum 1 / (r + j)`` and
``sum 1 / (r + j)**2``. :func:`log_rising` and its derivative ops compute
them that way below :data:`SHORT` and fall back on the special functions
above, with ``pytensor`` gradients so that the kernels are still derived
from one expression.
"""

from __future__ import annotations

import math

from pytensor.gradient import grad_undefined
from pytensor.link.numba.dispatch import basic as numba_basic
from pytensor.link.numba.dispatch.scalar import register_scalar_funcify, scalar_op_cache_key
from pytensor.scalar.basic import BinaryScalarOp, upgrade_to_float
from pytensor.scalar.math import TriGamma
from pytensor.tensor.elemwise import Elemwise
from scipy import special

#: Counts up to this are summed term by term; above it the special functions are used.
SHORT = 16
#: Beyond this ``r`` a product of SHORT factors could overflow; the special functions take over.
_PROD_MAX_R = 1e18
#: From this ``r`` on (near-Poisson counts) the differences come from Stirling's series written
#: as differences, which keeps full precision where ``lgamma(y + r) - lgamma(r)`` cancels.
LARGE_R = 1e4


@numba_basic.numba_njit
def _recurrence(x, bound, power):
    # Shift x up to ``bound`` with psi's recurrence: sum of 1 / z**power over the steps, and the end z.
    acc = 0.0
    z = x
    while z < bound:
        acc += 1.0 / z if power == 1 else 1.0 / (z * z)
        z += 1.0
    return acc, z


@numba_basic.numba_njit
def _polygamma01(x, order):
    # digamma (order 0) or trigamma (order 1): psi's recurrence up to x >= 6 (10), then the
    # asymptotic series (|err| < 1e-12 for x > 0).
    if x <= 0.0:
        return math.nan
    acc, z = _recurrence(x, 6.0 if order == 0 else 10.0, order + 1)
    w = 1.0 / (z * z)
    if order == 0:
        return -acc + math.log(z) - 0.5 / z - w * (1.0 / 12.0 - w * (1.0 / 120.0 - w * (1.0 / 252.0 - w * (1.0 / 240.0 - w / 132.0))))
    tail = (w / z) * (1.0 / 6.0 + w * (-1.0 / 30.0 + w * (1.0 / 42.0 + w * (-1.0 / 30.0 + w * 5.0 / 66.0))))
    return acc + 1.0 / z + 0.5 * w + tail


@numba_basic.numba_njit
def _digamma(x):
    return _polygamma01(x, 0)


@numba_basic.numba_njit
def _trigamma(x):
    return _polygamma01(x, 1)


@register_scalar_funcify(TriGamma)
def _numba_funcify_trigamma(op, node, **kwargs):
    @numba_basic.numba_njit
    def trigamma(x):
        return _trigamma(x)

    return trigamma, scalar_op_cache_key(op, cache_version="bayescount.trigamma.v4")


#: The same functions in C: pytensor fuses elementwise ops into one loop only when each
#: has C code, and the fused loop is what the numba backend compiles.
_C_SUPPORT = """
#ifndef BAYESCOUNT_RISING
#define BAYESCOUNT_RISING
#include <math.h>
static double bc_digamma(double x) {
    double acc = 0.0, w;
    if (x <= 0.0) return NAN;
    while (x < 6.0) { acc -= 1.0 / x; x += 1.0; }
    w = 1.0 / (x * x);
    return acc + log(x) - 0.5 / x
        - w * (1.0 / 12.0 - w * (1.0 / 120.0 - w * (1.0 / 252.0 - w * (1.0 / 240.0 - w / 132.0))));
}
static double bc_trigamma(double x) {
    double acc = 0.0, w;
    if (x <= 0.0) return NAN;
    while (x < 10.0) { acc += 1.0 / (x * x); x += 1.0; }
    w = 1.0 / (x * x);
    return acc + 1.0 / x + 0.5 * w
        + (w / x) * (1.0 / 6.0 + w * (-1.0 / 30.0 + w * (1.0 / 42.0 + w * (-1.0 / 30.0 + w * 5.0 / 66.0))));
}
static double bc_log_rising(double y, double r) {
    double p, x;
    int j;
    if (y == 0.0) return 0.0;
    if (y <= %(short)d && y == floor(y) && r < %(prod_max)g) {
        p = r;
        for (j = 1; j < (int)y; ++j) p *= r + j;
        return log(p);
    }
    if (r >= %(large)g) {
        x = y + r;
        return y * log(r) + (x - 0.5) * log1p(y / r) - y - y / (12.0 * r * x)
            - (1.0 / (x * x * x) - 1.0 / (r * r * r)) / 360.0;
    }
    return lgamma(y + r) - lgamma(r);
}
static double bc_digamma_rising(double y, double r) {
    double acc = 0.0;
    int j;
    double x;
    if (y <= %(short)d && y == floor(y)) {
        for (j = 0; j < (int)y; ++j) acc += 1.0 / (r + j);
        return acc;
    }
    if (r >= %(large)g) {
        x = y + r;
        return log1p(y / r) + 0.5 * y / (r * x) - (1.0 / (x * x) - 1.0 / (r * r)) / 12.0
            + (1.0 / (x * x * x * x) - 1.0 / (r * r * r * r)) / 120.0;
    }
    return bc_digamma(y + r) - bc_digamma(r);
}
static double bc_trigamma_rising(double y, double r) {
    double acc = 0.0, z;
    int j;
    double x;
    if (y <= %(short)d && y == floor(y)) {
        for (j = 0; j < (int)y; ++j) { z = r + j; acc -= 1.0 / (z * z); }
        return acc;
    }
    if (r >= %(large)g) {
        x = y + r;
        return -y / (r * x) + 0.5 * (1.0 / (x * x) - 1.0 / (r * r))
            + (1.0 / (x * x * x) - 1.0 / (r * r * r)) / 6.0 - (1.0 / (x * x * x * x * x) - 1.0 / (r * r * r * r * r)) / 30.0;
    }
    return bc_trigamma(y + r) - bc_trigamma(r);
}
#endif
""" % {"short": SHORT, "prod_max": _PROD_MAX_R, "large": LARGE_R}


class _Rising(BinaryScalarOp):
    """Shared plumbing: ``(y, r)`` in, one float out; ``y`` is data (no gradient)."""

    c_name: str = ""

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))

    def c_support_code(self, **kwargs):
        return _C_SUPPORT

    def c_code(self, node, name, inputs, outputs, sub):
        if node.inputs[0].type.dtype not in ("float32", "float64"):
            raise NotImplementedError("only floating point is implemented")
        y, r = inputs
        (z,) = outputs
        return f"{z} = {self.c_name}((double){y}, (double){r});"

    def c_code_cache_version(self):
        return (2,)

    def pullback(self, inputs, outputs, grads):
        y, r = inputs
        (gz,) = grads
        # d/dr of each op is the next one; the NB kernels need no third derivative.
        if type(self) not in _DERIVATIVE:
            raise NotImplementedError(f"{type(self).__name__} has no derivative here")
        return [grad_undefined(self, 0, y, "counts are data"), gz * _DERIVATIVE[type(self)](y, r)]


class LogRising(_Rising):
    """``lgamma(y + r) - lgamma(r)`` (the log rising factorial for integer ``y``)."""

    c_name = "bc_log_rising"

    def impl(self, y, r):
        return special.gammaln(y + r) - special.gammaln(r)


class DigammaRising(_Rising):
    """``digamma(y + r) - digamma(r)``: the derivative of :class:`LogRising` in ``r``."""

    c_name = "bc_digamma_rising"

    def impl(self, y, r):
        return special.digamma(y + r) - special.digamma(r)


class TrigammaRising(_Rising):
    """``trigamma(y + r) - trigamma(r)``: the derivative of :class:`DigammaRising` in ``r``."""

    c_name = "bc_trigamma_rising"

    def impl(self, y, r):
        return special.polygamma(1, y + r) - special.polygamma(1, r)


_digamma_rising = DigammaRising(upgrade_to_float, name="digamma_rising")
_trigamma_rising = TrigammaRising(upgrade_to_float, name="trigamma_rising")
_DERIVATIVE = {LogRising: _digamma_rising, DigammaRising: _trigamma_rising}
log_rising = Elemwise(LogRising(upgrade_to_float, name="log_rising"))
digamma_rising = Elemwise(_digamma_rising)
trigamma_rising = Elemwise(_trigamma_rising)


@numba_basic.numba_njit
def log_rising_given(y, r, lgr):
    """``lgamma(y + r) - lgamma(r)`` with ``lgr = lgamma(r)`` given (or NaN: computed where needed).

    The fused NB kernels (:mod:`bayescount._nb_kernels`) pass one ``lgamma(r)`` per gene.
    """
    if y == 0.0:
        return 0.0
    if y <= SHORT and y == math.floor(y) and r < _PROD_MAX_R:
        prod = r
        for j in range(1, int(y)):
            prod *= r + j
        return math.log(prod)
    if r >= LARGE_R:
        x = y + r
        return (y * math.log(r) + (x - 0.5) * math.log1p(y / r) - y - y / (12.0 * r * x)
                - (1.0 / (x * x * x) - 1.0 / (r * r * r)) / 360.0)
    return math.lgamma(y + r) - (math.lgamma(r) if math.isnan(lgr) else lgr)


@numba_basic.numba_njit
def _log_rising_nb(y, r):
    return log_rising_given(y, r, math.nan)


@numba_basic.numba_njit
def _digamma_rising_nb(y, r):
    if y <= SHORT and y == math.floor(y):
        acc = 0.0
        for j in range(int(y)):
            acc += 1.0 / (r + j)
        return acc
    if r >= LARGE_R:
        x = y + r
        return (math.log1p(y / r) + 0.5 * y / (r * x) - (1.0 / (x * x) - 1.0 / (r * r)) / 12.0
                + (1.0 / (x * x * x * x) - 1.0 / (r * r * r * r)) / 120.0)
    return _digamma(y + r) - _digamma(r)


@numba_basic.numba_njit
def _trigamma_rising_nb(y, r):
    if y <= SHORT and y == math.floor(y):
        acc = 0.0
        for j in range(int(y)):
            z = r + j
            acc -= 1.0 / (z * z)
        return acc
    if r >= LARGE_R:
        x = y + r
        return (-y / (r * x) + 0.5 * (1.0 / (x * x) - 1.0 / (r * r)) + (1.0 / (x * x * x) - 1.0 / (r * r * r)) / 6.0
                - (1.0 / (x * x * x * x * x) - 1.0 / (r * r * r * r * r)) / 30.0)
    return _trigamma(y + r) - _trigamma(r)


def _lowering(fn, name):
    def funcify(op, node, **kwargs):
        return fn, scalar_op_cache_key(op, cache_version=f"bayescount.{name}.v6")

    return funcify


for _op, _fn in ((LogRising, _log_rising_nb), (DigammaRising, _digamma_rising_nb), (TrigammaRising, _trigamma_rising_nb)):
    register_scalar_funcify(_op)(_lowering(_fn, _op.__name__))
