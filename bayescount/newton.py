"""The per-gene numeric core of the MAP path: compiled kernels, batched Newton, Laplace.

The likelihood part's elementwise log-density (the same PyMC distribution the
model uses) is differentiated by pytensor in the linear predictor and the gene
parameters and compiled once with numba; the chain rule through the design
matrix and each gene's small K x K solve are batched numpy. The NB with one
log-dispersion per gene and no weights takes the hand-fused kernels of
:mod:`bayescount._nb_kernels` instead (tested against these).
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import numpy as np
import pytensor.tensor as pt

from . import _kernels  # noqa: F401  (registers numba trigamma)
from ._linalg import chol_solve, spd_inverse
from ._nb_kernels import lgamma_rows, nb_both, nb_eta, nb_normalizer, nb_value
from ._nb_newton import nb_newton
from ._threads import compile_kernel
from .data import CountData
from .model import Layout, param_design
from .parts import NegativeBinomial
from .spec import Spec

#: Whether the NB with one log-dispersion per gene takes the fused kernels (False: the
#: pytensor-derived ones, the reference the tests compare whole fits against).
FUSED_NB = True
#: Whether :func:`newton` runs those fits gene by gene in compiled code (False: the stacked numpy
#: loop around the same kernels, which the tests hold it to).
FUSED_NEWTON = True
_LIK_CACHE: dict = {}
_LIK_LOCK = threading.RLock()
MAX_STEP = 5.0
INFO_FRACTION = 0.05

def likelihood_kernel(lik, inputs: tuple[int, ...] | None = None, logp: bool | str = True):
    """Compile ``(y, eta, *gene_params) -> (logp, d1..., d2...)`` elementwise.

    ``inputs`` picks the differentiated inputs (0: ``eta``, ``1 + q``: gene
    parameter ``q``; default all), so a fit with the log-dispersion held at a
    quadrature node does not pay for its digamma and trigamma terms; without
    ``logp`` the kernel returns the derivatives only (a Newton step that does
    not need the log-likelihood then skips its log-gamma terms); with
    ``logp="split"`` its value leaves out the eta-free terms
    (``lik.kernel_logp_split``).
    """
    key = (repr(lik), inputs, logp)
    with _LIK_LOCK:  # gene chunks on threads ask for the same kernels at once: one compiles
        if key in _LIK_CACHE:
            # Already compiled in this process: nothing was compiled for this call.
            return _LIK_CACHE[key][:-1] + (0.0,)
        return _compile_likelihood(lik, inputs, logp, key)


def _compile_likelihood(lik, inputs, logp, key):
    t0 = time.perf_counter()
    y = pt.dmatrix("y")
    eta = pt.dmatrix("eta")
    ps = [pt.dmatrix(n) for n in lik.gene_params]
    lp = lik.kernel_logp(y, eta, dict(zip(lik.gene_params, ps)))
    if logp == "split":
        # The gene parameters are held: the eta-free normalizer is left out of the value
        # (the caller adds it, computed once per parameter value); derivatives are the same.
        lp_out = lik.kernel_logp_split(y, eta, dict(zip(lik.gene_params, ps)))[0]
    every = [eta, *ps]
    wrt = every if inputs is None else [every[i] for i in inputs]
    # Some pairs are disconnected (a hurdle's zero part ignores eta): their derivatives are zero.
    d1 = pt.grad(lp.sum(), wrt, disconnected_inputs="ignore")
    # Each element's logp depends only on the same element of every input, so
    # the gradient of a summed first derivative is the elementwise second derivative.
    d2 = []
    for i in range(len(wrt)):
        d2.extend(pt.grad(d1[i].sum(), wrt[i:], disconnected_inputs="ignore"))
    # pytensor logs (and skips) a failed algebraic rewrite on boolean masks that the hurdle's
    # switch gradients create; the compiled function is correct, so keep the log quiet.
    rewrite_log = logging.getLogger("pytensor.graph.rewriting.basic")
    level = rewrite_log.level
    rewrite_log.setLevel(logging.CRITICAL)
    try:
        outputs = [lp_out if logp == "split" else lp, *d1, *d2] if logp else [*d1, *d2]
        full = compile_kernel([y, eta, *ps], outputs, on_unused_input="ignore")
    finally:
        rewrite_log.setLevel(level)
    if inputs is not None or logp is not True:
        _LIK_CACHE[key] = (full, time.perf_counter() - t0)
        return _LIK_CACHE[key]
    value = compile_kernel([y, eta, *ps], lp.sum(axis=1))
    pointwise = compile_kernel([y, eta, *ps], lp)
    _LIK_CACHE[key] = (full, value, pointwise, time.perf_counter() - t0)
    return _LIK_CACHE[key]


def _rows(rows):
    return np.ascontiguousarray(rows, dtype=np.int64)


def capped(step):
    """Newton steps (gene, coordinate) shrunk so that none moves a coordinate by more than MAX_STEP."""
    big = np.abs(step).max(axis=1)
    return step * np.minimum(1.0, MAX_STEP / np.maximum(big, 1e-300))[:, None]


def linear_predictors(theta, X, offset, cols, E):
    """``eta`` and each gene parameter as (gene, obs) arrays from per-gene coordinates ``theta``.

    ``X`` is the (obs, linear coordinate) design; ``cols[q]`` are gene
    parameter ``q``'s coordinates in ``theta`` and ``E[q]`` their (obs,
    coordinate) design, or None for one value per gene.
    """
    P = X.shape[1]
    eta = offset[None, :] + theta[:, :P] @ X.T
    G, n = theta.shape[0], X.shape[0]
    params = [np.ascontiguousarray(np.broadcast_to(theta[:, c[0], None], (G, n))) if Eq is None
              else np.ascontiguousarray(theta[:, c] @ Eq.T) for c, Eq in zip(cols, E)]
    return eta, params


class GeneProblem:
    """Per-gene log posterior, gradient and Hessian for fixed hyperparameters."""

    def __init__(self, spec: Spec, data: CountData, lay: Layout):
        self.lik = spec.likelihood
        # Shared with the gene chunks of :meth:`take` (kernels compiled there count here too).
        self._compiled = {"seconds": 0.0}
        self._main = None
        self._partial: dict = {}
        self._outer: dict = {}
        self.y = data.counts.astype(float)
        self.w = data.weights
        self.X = data.design.matrix
        if lay.re_coef:
            # Group-level effects are more linear coordinates; their prior scale is set by the caller.
            self.X = np.hstack([self.X, data.design.random.matrix])
        self.offset = data.offset
        self.P = lay.n_linear
        self.K = len(lay.names)
        self.Q = len(lay.gene_params)
        # Each gene parameter's coordinates and their (obs, coordinate) design (levels of
        # dispersion_by, zero-part covariates); None: one value per gene.
        self.cols = [np.array(c) for c in lay.param_cols.values()]
        self.E = list(param_design(lay, data).values())
        # The NB with one log-dispersion per gene and no weights (nb_trend, nb_donor) takes the fused
        # kernels of _nb_kernels; they need the per-gene sums of lgamma(y + 1), once per fit.
        self._lgy = None
        if FUSED_NB and type(self.lik) is NegativeBinomial and self.Q == 1 and self.E[0] is None and self.w is None:
            self._lgy = lgamma_rows(self.y)
            # Observations sharing a design row share its outer product: the kernels sum their
            # derivatives per distinct row (2 for '~ group', 8 for donors within conditions).
            self._Xd, grp = np.unique(self.X, axis=0, return_inverse=True)
            self._grp = np.ascontiguousarray(grp.ravel(), dtype=np.int64)
            P = self._Xd.shape[1]
            self._outer_d = (self._Xd[:, :, None] * self._Xd[:, None, :]).reshape(len(self._Xd), P * P)

    @property
    def fused_newton(self) -> bool:
        """Whether :func:`newton` takes the compiled per-gene loop (the fused NB, its log-dispersion last)."""
        return (FUSED_NEWTON and self._lgy is not None and self.K == self.P + 1
                and int(self.cols[0][0]) == self.P)

    def _main_kernels(self):
        # Compiled on first use: a fit on the fused NB kernels needs the pytensor ones only for
        # pointwise log-likelihoods, and building them takes ~0.5 s of a process's first fit.
        # Kept on the problem, so the Newton loop does not take the cache's lock at every pass.
        if self._main is None:
            fns = likelihood_kernel(self.lik)
            self._compiled["seconds"] += fns[-1]
            self._main = fns[:-1]
        return self._main

    @property
    def full(self):
        """The compiled ``(y, eta, *params) -> (logp, d1..., d2...)`` kernel."""
        return self._main_kernels()[0]

    @property
    def value(self):
        """The compiled per-gene sum of the log-density."""
        return self._main_kernels()[1]

    @property
    def pointwise(self):
        """The compiled elementwise log-density."""
        return self._main_kernels()[2]

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling kernels for this problem (and its chunks)."""
        return self._compiled["seconds"]

    def take(self, genes: slice) -> "GeneProblem":
        """The problem for a contiguous range of genes: views of the counts, kernels and caches shared."""
        part = copy.copy(self)
        part.y = self.y[genes]
        part.w = None if self.w is None else self.w[genes]
        part._lgy = None if self._lgy is None else self._lgy[genes]
        return part

    def _eta_params(self, theta, rows):
        return linear_predictors(theta, self.X, self.offset, self.cols, self.E)

    def loglik(self, theta, rows):
        if self._lgy is not None:
            return nb_value(self.y, _rows(rows), self._eta(theta), self._disp(theta), self._lgy)
        eta, params = self._eta_params(theta, rows)
        if self.w is not None:
            return np.sum(self.w[rows] * self.pointwise(self.y[rows], eta, *params), axis=1)
        return self.value(self.y[rows], eta, *params)

    def logpost(self, theta, rows, loc, scale):
        z = (theta - loc[rows]) / scale[rows]
        return self.loglik(theta, rows) - 0.5 * np.sum(z * z, axis=1)

    def _gram(self, key, A, B, h):
        """``sum_n h[g, n] A[n, a] B[n, b]`` for every gene: one matrix product with the cached
        row-wise outer products of the two designs (about 2x faster than the einsum)."""
        if key not in self._outer:
            n, a, b = A.shape[0], A.shape[1], B.shape[1]
            # Very wide designs over many observations would make the cache large: einsum there.
            self._outer[key] = (A[:, :, None] * B[:, None, :]).reshape(n, a * b) if n * a * b <= 2e7 else None
        outer = self._outer[key]
        if outer is None:
            return np.einsum("gn,na,nb->gab", h, A, B, optimize=True)
        return (h @ outer).reshape(h.shape[0], A.shape[1], B.shape[1])

    def normalizer(self, theta, rows):
        """Per-gene sum of the likelihood's eta-free terms at ``theta``'s gene parameters, or None.

        None where the likelihood part does not split its log-density
        (:meth:`~bayescount.parts._Likelihood.kernel_logp_split`).
        """
        if self._lgy is not None:
            return nb_normalizer(self.y, _rows(rows), self._disp(theta), self._lgy)
        key = (repr(self.lik), "normalizer")
        with _LIK_LOCK:
            if key not in _LIK_CACHE:
                y = pt.dmatrix("y")
                ps = [pt.dmatrix(n) for n in self.lik.gene_params]
                split = self.lik.kernel_logp_split(y, pt.zeros_like(y), dict(zip(self.lik.gene_params, ps)))
                _LIK_CACHE[key] = None if split is None else compile_kernel(
                    [y, *ps], pt.broadcast_to(split[1], y.shape), on_unused_input="ignore")
            fn = _LIK_CACHE[key]
        if fn is None:
            return None
        params = self._eta_params(theta, rows)[1]
        out = fn(self.y[rows], *params)
        return np.sum(out if self.w is None else self.w[rows] * out, axis=1)

    def _kernel(self, inputs, logp):
        if inputs is None and logp is True:
            return self.full
        fn = self._partial.get((inputs, logp))
        if fn is None:
            with _LIK_LOCK:
                fn, seconds = likelihood_kernel(self.lik, inputs, logp)
                self._partial[inputs, logp] = fn
                self._compiled["seconds"] += seconds
        return fn

    def derivs(self, theta, rows, loc, scale, held=(), need_ll=True, normalizer=None):
        """Log-likelihood, gradient and Hessian of the log posterior at ``theta`` (``rows``).

        ``held`` lists gene parameters (indices into ``lik.gene_params``) held
        fixed by the caller: their gradient entries and Hessian rows are left at
        zero (prior terms aside) and the kernel skips their derivatives.
        Without ``need_ll`` the log-likelihood is not computed (None).
        ``normalizer``: with every gene parameter held, :meth:`normalizer` at
        them (genes ``rows``); the kernel then skips the eta-free terms.
        """
        Q = self.Q
        inputs = tuple(i for i in range(1 + Q) if i - 1 not in held)
        split = need_ll and normalizer is not None
        if split and inputs != (0,):
            raise ValueError("a normalizer applies only with every gene parameter held")
        if self._lgy is not None:
            lp, g, H = self._nb_derivs(theta, rows, inputs, need_ll, split)
        else:
            lp, g, H = self._derivs(theta, rows, inputs, need_ll, split)
        prec = 1.0 / scale[rows] ** 2
        g -= (theta - loc[rows]) * prec
        H[:, np.arange(self.K), np.arange(self.K)] -= prec
        if lp is None:
            return None, g, H
        return lp + (normalizer if split else 0.0), g, H

    def _derivs(self, theta, rows, inputs, need_ll, split):
        """The log-likelihood's row sums, gradient and Hessian from the pytensor kernels."""
        P, Q, X = self.P, self.Q, self.X
        eta, params = self._eta_params(theta, rows)
        kind = "split" if split else need_ll
        out = list(self._kernel(None if len(inputs) == 1 + Q else inputs, kind)(self.y[rows], eta, *params))
        if not need_ll:
            out.insert(0, None)
        if self.w is not None:
            # Observation weights scale each term of the log-likelihood and its derivatives.
            w = self.w[rows]
            out = [None if o is None else o * w for o in out]
        n_in = len(inputs)
        lp, d1, d2 = out[0], dict(zip(inputs, out[1 : 1 + n_in])), out[1 + n_in :]
        G = len(rows)
        g = np.zeros((G, self.K))
        H = np.zeros((G, self.K, self.K))
        # Design of each input of the kernel: X for eta, E (or a column of ones) per gene parameter.
        cols = [np.arange(P)] + self.cols
        E = [X] + self.E
        g[:, :P] = d1[0] @ X
        for i in inputs[1:]:
            q = i - 1
            g[:, self.cols[q]] = d1[i].sum(axis=1)[:, None] if self.E[q] is None else d1[i] @ self.E[q]
        it = iter(d2)
        for a, i in enumerate(inputs):
            for j in inputs[a:]:
                h = next(it)
                ci, cj = cols[i], cols[j]
                if i == 0 and j == 0:
                    H[:, :P, :P] = self._gram((0, 0), X, X, h)
                    continue
                if E[j] is None:
                    block = (h @ E[i])[:, :, None] if E[i] is not None else h.sum(axis=1)[:, None, None]
                elif E[i] is None:
                    block = (h @ E[j])[:, None, :]
                else:
                    block = self._gram((i, j), E[i], E[j], h)
                H[:, ci[:, None], cj[None, :]] = block
                H[:, cj[:, None], ci[None, :]] = np.swapaxes(block, 1, 2)
        return None if lp is None else lp.sum(axis=1), g, H

    def _eta(self, theta):
        return self.offset[None, :] + theta[:, : self.P] @ self.X.T

    def _disp(self, theta):
        return np.ascontiguousarray(theta[:, self.cols[0][0]])

    def _nb_derivs(self, theta, rows, inputs, need_ll, split):
        """The log-likelihood's row sums, gradient and Hessian from the fused NB kernels."""
        P, Xd = self.P, self._Xd
        k = self.cols[0][0]
        d, eta, rows = self._disp(theta), self._eta(theta), _rows(rows)
        G = len(rows)
        g = np.zeros((G, self.K))
        H = np.zeros((G, self.K, self.K))
        if inputs == (0,):
            ll, d1, d2 = nb_eta(self.y, rows, eta, d, 2 if split else int(bool(need_ll)), self._lgy,
                                self._grp, len(Xd))
        else:
            ll, d1, d1d, d2, d2ed, d2dd = nb_both(self.y, rows, eta, d, bool(need_ll), self._lgy, self._grp, len(Xd))
            g[:, k] = d1d
            H[:, :P, k] = H[:, k, :P] = d2ed @ Xd
            H[:, k, k] = d2dd
        g[:, :P] = d1 @ Xd
        H[:, :P, :P] = (d2 @ self._outer_d).reshape(G, P, P)
        return (ll if need_ll else None), g, H


def newton(prob: GeneProblem, theta, loc, scale, tol=1e-8, max_iter=60, rows=None, curvature=False):
    """Damped Newton on every gene (or ``rows``) at once; only unconverged genes are touched.

    Returns ``(theta, converged, n_iter)``; with ``curvature`` also the log
    posterior's Hessian and the log-likelihood at each returned mode (NaN
    outside ``rows``). A gene stops once its Newton decrement falls below
    ``tol``, after a last step of under ``sqrt(tol)`` posterior sds: the
    Hessian of its last pass and the quadratic model's log-likelihood stand
    for the mode's, and only genes that stopped otherwise take one more pass.

    The full step is tried with the derivatives: one kernel pass gives the
    line search its value and, where the step is taken (nearly always), the
    next iteration its gradient and Hessian. A value pass and a derivative
    pass per iteration cost a third more at 20,000 x 12; the iterates are the
    same (the two kernels' values agree to the bit).
    """
    if prob.fused_newton:
        return _fused_newton(prob, theta, loc, scale, tol, max_iter, rows, curvature)
    G, K = theta.shape[0], prob.K
    converged = np.zeros(G, dtype=bool)
    n_iter = np.zeros(G, dtype=int)
    active = np.arange(G) if rows is None else np.asarray(rows, dtype=int)
    todo_rows = active.copy()
    if curvature:
        H_out = np.full((G, K, K), np.nan)
        ll_out = np.full(G, np.nan)
        fresh = np.zeros(G, dtype=bool)
    # Log posterior at the current point, and the log-likelihood and derivatives there where a
    # pass already made them (``have``): the line search's full step gives them.
    f_cur = np.full(G, np.nan)
    ll_cur = np.full(G, np.nan)
    g_cur = np.empty((G, K))
    H_cur = np.empty((G, K, K))
    have = np.zeros(G, dtype=bool)
    for it in range(max_iter):
        if active.size == 0:
            break
        th = theta[active]
        if it == 0:
            ll, g, H = prob.derivs(th, active, loc, scale)
            z0 = (th - loc[active]) / scale[active]
            f_cur[active] = ll - 0.5 * np.sum(z0 * z0, axis=1)
            ll_cur[active] = ll
        else:
            g, H = g_cur[active], H_cur[active]
            stale = np.flatnonzero(~have[active])
            if stale.size:
                _, g[stale], H[stale] = prob.derivs(th[stale], active[stale], loc, scale, need_ll=False)
                ll_cur[active[stale]] = np.nan
        g_cur[active], H_cur[active], have[active] = g, H, True
        f0 = f_cur[active]
        finite = np.isfinite(f0) & np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(H), axis=(1, 2))
        if not finite.all():
            # A gene whose derivatives overflow stops where it is and stays unconverged.
            n_iter[active[~finite]] += 1
            active, th, f0, g, H = active[finite], th[finite], f0[finite], g[finite], H[finite]
            if active.size == 0:
                break
        A = -H
        L, step = chol_solve(A, g)
        diag = np.einsum("gkk->gk", L)
        bad = ~np.all(np.isfinite(diag) & (diag > 1e-4), axis=1)
        if bad.any():
            # Levenberg-style shift where the Hessian is not (safely) negative definite.
            min_eig = np.linalg.eigvalsh(A[bad])[:, 0]
            shift = np.where(min_eig < 1e-8, 1e-6 - min_eig + 1e-3 * np.abs(min_eig), 0.0)
            L[bad], step[bad] = chol_solve(A[bad] + shift[:, None, None] * np.eye(K), g[bad])
        step = capped(step)
        decrement = np.einsum("gk,gk->g", g, step)
        t = np.ones(active.size)
        accepted = np.zeros(active.size, dtype=bool)
        new = th.copy()
        # A gene whose Newton decrement is already below tol is at its mode: its last (tiny)
        # step is taken whole, as the line search would take it (the gain it forecasts, under
        # tol / 2, is all that is left), without another pass of the likelihood kernel.
        last = decrement < tol
        new[last] = th[last] + step[last]
        if curvature:
            # The last step is under sqrt(tol) posterior sds: the curvature of this pass stands for
            # the mode's (it moves by that step's share of the third derivative), and the
            # log-likelihood there follows from the quadratic model, without another pass.
            at, sl = active[last], step[last]
            H_out[at] = H[last]
            z = (new[last] - loc[at]) / scale[at]
            gain = np.einsum("gk,gk->g", g[last], sl) + 0.5 * np.einsum("gk,gkl,gl->g", sl, H[last], sl)
            ll_out[at] = f0[last] + gain + 0.5 * np.sum(z * z, axis=1)
            fresh[at] = True
        accepted[last] = True
        have[active[last]] = False
        todo = np.flatnonzero(~last)
        if todo.size:
            # The full step, with the derivatives there.
            cand = th[todo] + step[todo]
            ll1, g1, H1 = prob.derivs(cand, active[todo], loc, scale)
            z1 = (cand - loc[active[todo]]) / scale[active[todo]]
            f1 = ll1 - 0.5 * np.sum(z1 * z1, axis=1)
            ok = _armijo(f1, f0[todo], 1.0, decrement[todo])
            took, at = todo[ok], active[todo[ok]]
            new[took] = cand[ok]
            f_cur[at], ll_cur[at], g_cur[at], H_cur[at] = f1[ok], ll1[ok], g1[ok], H1[ok]
            accepted[took] = True
            todo = todo[~ok]
            t[todo] = 0.5
        for _half in range(29):
            if todo.size == 0:
                break
            cand = th[todo] + t[todo, None] * step[todo]
            f1 = prob.logpost(cand, active[todo], loc, scale)
            ok = _armijo(f1, f0[todo], t[todo], decrement[todo])
            new[todo[ok]] = cand[ok]
            f_cur[active[todo[ok]]] = f1[ok]
            have[active[todo[ok]]] = False
            accepted[todo[ok]] = True
            todo = todo[~ok]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        theta[active] = new
        n_iter[active] += 1
        done = (decrement < tol) | (np.abs(t[:, None] * step).max(axis=1) < 1e-7) | ~accepted
        converged[active[done & accepted]] = True
        converged[active[done & ~accepted & (decrement < 1e-6)]] = True
        active = active[~done]
    if not curvature:
        return theta, converged, n_iter
    stale = todo_rows[~fresh[todo_rows]]
    if stale.size:
        # Where a pass at the final point made its derivatives (a full step taken), they are reused.
        known = have[stale] & np.isfinite(ll_cur[stale])
        H_out[stale[known]], ll_out[stale[known]] = H_cur[stale[known]], ll_cur[stale[known]]
        rest = stale[~known]
        if rest.size:
            ll, _, H = prob.derivs(theta[rest], rest, loc, scale)
            H_out[rest], ll_out[rest] = H, ll
    return theta, converged, n_iter, H_out, ll_out


def _fused_newton(prob, theta, loc, scale, tol, max_iter, rows, curvature):
    """:func:`newton` by the compiled per-gene loop of :mod:`bayescount._nb_newton` (the fused NB)."""
    G, K = theta.shape
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    rows = np.arange(G) if rows is None else rows
    converged = np.zeros(G, dtype=bool)
    n_iter = np.zeros(G, dtype=np.int64)
    H_out = np.full((G, K, K), np.nan)
    ll_out = np.full(G, np.nan)
    nb_newton(prob.y, _rows(rows), prob._Xd, prob._grp, np.ascontiguousarray(prob.offset, dtype=np.float64),
              prob._lgy, theta, np.ascontiguousarray(loc, dtype=np.float64),
              np.ascontiguousarray(scale, dtype=np.float64), float(tol), int(max_iter), MAX_STEP, bool(curvature),
              converged, n_iter, H_out, ll_out)
    if not curvature:
        return theta, converged, n_iter
    return theta, converged, n_iter, H_out, ll_out


def _armijo(f1, f0, t, decrement):
    """Whether a line-search step of length ``t`` raised the log posterior enough (Armijo's rule)."""
    return np.isfinite(f1) & (f1 >= f0 + 1e-4 * t * decrement - 1e-12 * np.abs(f0))


def mixture_moments(thetas, covs, weights):
    """Mean and covariance of a per-gene mixture of normals."""
    mean = np.einsum("gi,gik->gk", weights, thetas)
    dev = thetas - mean[:, None]
    cov = np.einsum("gi,gikl->gkl", weights, covs + dev[..., :, None] * dev[..., None, :])
    return mean, cov


def summaries_from_cov(theta, cov, loc, scale, usable):
    """Gaussian division of a posterior ``N(theta, cov)`` by the coordinate's prior."""
    pd_ok = np.ones(theta.shape[0], dtype=bool)
    v = np.einsum("gkk->gk", cov)
    prec_prior = 1.0 / scale**2
    lam = 1.0 / v - prec_prior
    # Genes whose own data carry almost no information on a coordinate (e.g. a
    # level with all-zero counts) say nothing about its scale and are left out.
    ok = (lam > INFO_FRACTION * prec_prior) & (usable & pd_ok)[:, None]
    lam_safe = np.where(ok, lam, 1.0)
    xhat = np.where(ok, (theta / v - prec_prior * loc) / lam_safe, 0.0)
    s2 = np.where(ok, 1.0 / lam_safe, 1.0)
    return xhat, s2, ok.astype(float)


def laplace_cov(H):
    """Covariances ``(-H)^-1`` of a stack of log-posterior Hessians, and where ``-H`` is positive definite.

    Eigenvalues of ``-H`` below 1e-10 are raised to it. Cholesky inverses
    serve every block whose smallest eigenvalue is surely above that (it is
    at least ``1 / trace((-H)^-1)``); the rest go through ``eigh``.
    """
    A = -H
    cov = spd_inverse(A)
    tr = np.einsum("gkk->g", cov)
    fast = np.isfinite(tr) & (tr > 0.0) & (tr < 1e10) & np.all(np.isfinite(cov), axis=(1, 2))
    pd_ok = fast.copy()
    if not fast.all():
        slow = np.flatnonzero(~fast)
        w, V = np.linalg.eigh(A[slow])
        pd_ok[slow] = w[:, 0] > 0
        w = np.maximum(w, 1e-10)
        cov[slow] = np.einsum("gij,gj,gkj->gik", V, 1.0 / w, V)
    return cov, pd_ok
