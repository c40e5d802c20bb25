"""The MAP path's shared hyperparameters: compiled prior map and marginal criterion, bounds, packing.

:func:`_hyper_functions` compiles, once per spec and layout, the map from the
optimizer's vector ``u`` to every per-gene coordinate's prior (loc, scale)
and the quadrature-Laplace marginal criterion with its gradient, which
:mod:`bayescount.fit_map` maximizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.graph.traversal import ancestors

from .model import Layout, prior_loc_scale
from .spec import Spec

_HYPER_CACHE: dict = {}


@dataclass(frozen=True)
class _HyperFns:
    obj_fn: object  # (u, xhat, s2, mask, base_mean, qnodes, qlog, qmask, snodes, slog, smask) -> (criterion, gradient)
    prior_fn: object  # (u, base_mean) -> (loc, scale), (G, K) each
    driven: list  # coordinate groups sharing hyperparameters
    n_u: int
    sliced: int | None = None  # the hyper-driven coordinate summarized by likelihood slices, if any


def _hyper_functions(spec: Spec, lay: Layout):
    """Compile the prior (loc, scale) map and the marginal hyper-objective."""
    key = (spec.hash, lay.coef, lay.re_coef, lay.re_term_of, lay.names)
    if key in _HYPER_CACHE:
        return _HYPER_CACHE[key]
    u = pt.dvector("u")
    base_mean = pt.dvector("base_mean")
    xhat, s2, mask = pt.dmatrix("xhat"), pt.dmatrix("s2"), pt.dmatrix("mask")
    # Quadrature data for the first gene parameter (log-dispersion): nodes, log integrand
    # weights (likelihood / proposal x GH weight) and a per-gene mask.
    qnodes, qlog, qmask = pt.dtensor3("qnodes"), pt.dmatrix("qlog"), pt.dvector("qmask")
    # Likelihood slices of the zero part's logit (see quadrature.likelihood_slices): nodes,
    # log integrand weights and a per-gene mask.
    snodes, slog, smask = pt.dmatrix("snodes"), pt.dmatrix("slog"), pt.dvector("smask")
    hyper, prior_lp, pos = {}, pt.constant(0.0), 0
    for name, h in lay.scale_hyper.items():
        n = 1 if h.size is None else h.size
        uu = u[pos : pos + n] if h.size is not None else u[pos]
        pos += n
        hyper[name] = pt.exp(uu) if h.positive else uu
        # Hyperprior on the natural scale, plus the log-Jacobian of exp for positive ones.
        prior_lp = prior_lp + pm.logp(h.dist(), hyper[name]).sum() + (pt.sum(uu) if h.positive else 0.0)
    G = base_mean.shape[0]
    locs, scales = prior_loc_scale(spec, lay, hyper, base_mean)
    loc = pt.stack([pt.broadcast_to(l, (G,)) for l in locs], axis=1)
    scale = pt.stack([pt.broadcast_to(s, (G,)) for s in scales], axis=1)
    # Coordinates driven by the same hyperparameters form one group.
    groups: dict[frozenset, list[int]] = {}
    for k, (l, s) in enumerate(zip(locs, scales)):
        anc = set(map(id, ancestors([l, s])))
        names = frozenset(n for n, v in hyper.items() if id(v) in anc)
        if names:
            groups.setdefault(names, []).append(k)
    driven = [np.array(ks) for ks in groups.values()]
    K = len(lay.names)
    sliced = next((k for k in lay.sliced if any(k in ks for ks in driven)), None)
    sd = pt.sqrt(scale[:, :K] ** 2 + s2)
    ll = pt.sum(mask * (-0.5 * ((xhat - loc[:, :K]) / sd) ** 2 - pt.log(sd) - 0.5 * np.log(2 * np.pi)))
    if lay.integrated:
        idx = lay.integrated
        q_loc, q_scale = loc[:, idx][:, None, :], scale[:, idx][:, None, :]
        z = (qnodes - q_loc) / q_scale
        log_prior = pt.sum(-0.5 * z**2 - pt.log(q_scale) - 0.5 * np.log(2 * np.pi), axis=2)
        ll = ll + pt.sum(qmask * pt.logsumexp(qlog + log_prior, axis=1))
    if sliced is not None:
        s_loc, s_scale = loc[:, sliced][:, None], scale[:, sliced][:, None]
        z = (snodes - s_loc) / s_scale
        log_prior = -0.5 * z**2 - pt.log(s_scale) - 0.5 * np.log(2 * np.pi)
        ll = ll + pt.sum(smask * pt.logsumexp(slog + log_prior, axis=1))
    objective = -(ll + prior_lp)
    mode = "FAST_RUN"
    obj_fn = pytensor.function([u, xhat, s2, mask, base_mean, qnodes, qlog, qmask, snodes, slog, smask],
                               [objective, pt.grad(objective, u, disconnected_inputs="ignore")], mode=mode,
                               on_unused_input="ignore")
    prior_fn = pytensor.function([u, base_mean], [loc, scale], mode=mode, on_unused_input="ignore")
    _HYPER_CACHE[key] = _HyperFns(obj_fn, prior_fn, driven, pos, sliced)
    return _HYPER_CACHE[key]


def _initial_u(lay: Layout) -> np.ndarray:
    start = {"tau": 0.5, "a0": 0.05, "a1": 0.5, "sigma_d": 1.0, "zi_mu": -3.0, "zi_sigma": 1.0,
             "re_mu": np.log(0.3), "re_sigma": 0.5, "disp_shift": 0.0}
    out = []
    for name, h in lay.scale_hyper.items():
        v = start.get(name, 1.0)
        out.extend([np.log(v) if h.positive else v] * (1 if h.size is None else h.size))
    return np.array(out, dtype=float)


#: Largest move of a random-effect hyperparameter (log scale or mean) on one node table:
#: the table's nodes sit where the previous hyperparameters put the genes' scales.
RE_TRUST = 1.0


#: Smallest scatter scale (sigma_d, re_sigma, zi_sigma) the MAP path estimates. A per-gene
#: parameter's prior this narrow already pins it to the population value for every answer,
#: while narrower ones fall between the quadrature nodes and the sweeps crawl after them.
MIN_SCATTER = 0.01


def _bounds(lay: Layout, u: np.ndarray) -> list[tuple[float, float]]:
    out, pos = [], 0
    for name, h in lay.scale_hyper.items():
        for _ in range(1 if h.size is None else h.size):
            lo, hi = -12.0, 8.0
            if name in _SCALE_HYPER:
                lo = np.log(MIN_SCATTER)
            if name in ("re_mu", "re_sigma"):
                lo, hi = max(lo, u[pos] - RE_TRUST), min(hi, u[pos] + RE_TRUST)
            out.append((lo, hi))
            pos += 1
    return out


#: Prior scales whose moves count on their own scale, not in log: once one heads for 0
#: (no variation of that kind), its log keeps moving without changing any answer.
_SCALE_HYPER = ("sigma_d", "re_sigma", "zi_sigma")


#: Trend hyperparameters whose moves count through the NB variance they give each gene.
_TREND_HYPER = ("a0", "a1")


def _moved(lay: Layout, u0: np.ndarray, u1: np.ndarray, loc0=None, loc1=None, base_mean=None) -> float:
    """The largest move of the hyperparameters between two sweeps, in the units that reach the genes.

    Scatter scales count on their own scale, other hyperparameters in log
    (or as they are, for real ones). The trend's ``a0``, ``a1`` count through
    each gene's NB variance ``mu (1 + alpha mu)`` at its base mean, given the
    log-dispersion prior locations before and after (``loc0``, ``loc1``, (G,
    L)): a move of ``log a1`` where ``a1 / mu`` is a sliver of the dispersion
    changes no gene's model, yet kept the sweeps going (``log a1`` wanders
    when few genes are low enough to pin it down: 5-6 sweeps instead of 4-5
    on 100 genes x 2,000 cells, the tables equal to 2e-4).
    """
    step, pos = np.abs(u1 - u0), 0
    for name, h in lay.scale_hyper.items():
        n = 1 if h.size is None else h.size
        if name in _SCALE_HYPER:
            step[pos : pos + n] = np.abs(np.exp(u1[pos : pos + n]) - np.exp(u0[pos : pos + n]))
        elif name in _TREND_HYPER and loc0 is not None:
            step[pos : pos + n] = 0.0
        pos += n
    moved = float(step.max()) if step.size else 0.0
    if loc0 is not None and any(name in lay.scale_hyper for name in _TREND_HYPER):
        am = np.exp(loc1) * base_mean[:, None]
        moved = max(moved, float(np.max(np.abs(loc1 - loc0) * am / (1.0 + am), initial=0.0)))
    return moved


def _unpack_u(lay: Layout, u: np.ndarray) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, h in lay.scale_hyper.items():
        n = 1 if h.size is None else h.size
        v = u[pos] if h.size is None else u[pos : pos + n]
        out[name] = np.exp(v) if h.positive else np.asarray(v, dtype=float)
        pos += n
    return out


def pack_u(lay: Layout, values: dict) -> np.ndarray:
    """The optimizer's vector from natural-scale hyperparameters (inverse of :func:`_unpack_u`)."""
    out = []
    for name, h in lay.scale_hyper.items():
        v = np.broadcast_to(np.asarray(values[name], dtype=float), (1 if h.size is None else h.size,))
        out.extend(np.log(v) if h.positive else v)
    return np.array(out, dtype=float)
