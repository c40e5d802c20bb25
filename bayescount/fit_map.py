"""The genome-scale MAP + Laplace path.

Per-gene posterior modes are found by batched Newton steps: the likelihood
part's elementwise log-density is differentiated (first and second
derivatives in the linear predictor and the gene parameters) by pytensor and
compiled once per likelihood; the chain rule through the design matrix and
each gene's small K x K solve are batched numpy. Shared hyperparameters are
not taken from the joint mode (where scales collapse toward zero) but from
a Laplace-approximate marginal likelihood: at the current modes, each gene's
Laplace approximation gives, for every hyperparameter-driven coordinate, an
implied Gaussian likelihood summary ``(x_hat, s2)``, and the hyperparameters
maximize ``sum_g log N(x_hat_g; loc_g(phi), scale(phi)^2 + s2_g)`` plus their
log-prior. Modes and hyperparameters alternate until the hyperparameters
settle; the final per-gene Laplace approximation ``N(mode, (-H)^-1)``
gives posterior sds and draws.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.graph.traversal import ancestors
from scipy import optimize

from .data import CountData
from .model import Layout, layout, prior_loc_scale
from .newton import (
    N_NODES,
    GeneProblem,
    integrate_gene_params,
    laplace_cov,
    likelihood_summaries,
    mixture_moments,
    newton,
    summaries_from_cov,
)
from .progress import progress_bar
from .spec import Spec
from .stats import component_loglik, mixture_weights_em

log = logging.getLogger(__name__)

_HYPER_CACHE: dict = {}
WEAK_SCALE = 3.0
HYPER_GENES = 4000


@dataclass
class MapState:
    """Result of the MAP + Laplace fit, all arrays over genes."""

    mode: np.ndarray  # (G, C, K) per mixture component (C = 1 without a mixture prior)
    cov: np.ndarray  # (G, C, K, K) Laplace covariances
    weights: np.ndarray  # (G, C) posterior component weights
    prior_component: np.ndarray  # (C,) which prior mixture component each column belongs to
    map_mode: np.ndarray  # (G, K) the posterior mode (heaviest prior component)
    map_cov: np.ndarray  # (G, K, K) its Laplace covariance
    mle_mode: np.ndarray  # (G, K) mode with the coefficient prior widened (for Wald tests)
    mle_cov: np.ndarray  # (G, K, K)
    hyper: dict[str, np.ndarray]
    converged: np.ndarray  # (G,) bool
    n_iter: np.ndarray  # (G,) Newton iterations summed over sweeps
    loglik: np.ndarray  # (G,) log-likelihood at the mode
    names: tuple[str, ...]
    n_sweeps: int = 0
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------ compiled pieces
def _hyper_functions(spec: Spec, lay: Layout):
    """Compile the prior (loc, scale) map and the marginal hyper-objective."""
    key = (spec.hash, lay.coef, lay.gene_params)
    if key in _HYPER_CACHE:
        return _HYPER_CACHE[key]
    u = pt.dvector("u")
    base_mean = pt.dvector("base_mean")
    xhat, s2, mask = pt.dmatrix("xhat"), pt.dmatrix("s2"), pt.dmatrix("mask")
    # Quadrature data for the first gene parameter (log-dispersion): nodes, log integrand
    # weights (likelihood / proposal x GH weight) and a per-gene mask.
    qnodes, qlog, qmask = pt.dmatrix("qnodes"), pt.dmatrix("qlog"), pt.dvector("qmask")
    hyper, prior_lp, pos = {}, pt.constant(0.0), 0
    for name, h in lay.scale_hyper.items():
        n = 1 if h.size is None else h.size
        uu = u[pos : pos + n] if h.size is not None else u[pos]
        pos += n
        hyper[name] = pt.exp(uu)
        # Hyperprior on the positive scale plus the log-Jacobian of exp.
        prior_lp = prior_lp + pm.logp(h.dist(), hyper[name]).sum() + pt.sum(uu)
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
    sd = pt.sqrt(scale**2 + s2)
    ll = pt.sum(mask * (-0.5 * ((xhat - loc) / sd) ** 2 - pt.log(sd) - 0.5 * np.log(2 * np.pi)))
    if lay.gene_params:
        k = lay.n_coef
        z = (qnodes - loc[:, k, None]) / scale[:, k, None]
        log_prior = -0.5 * z**2 - pt.log(scale[:, k, None]) - 0.5 * np.log(2 * np.pi)
        ll = ll + pt.sum(qmask * pt.logsumexp(qlog + log_prior, axis=1))
    objective = -(ll + prior_lp)
    mode = pytensor.compile.mode.get_mode("FAST_COMPILE")
    obj_fn = pytensor.function([u, xhat, s2, mask, base_mean, qnodes, qlog, qmask],
                               [objective, pt.grad(objective, u, disconnected_inputs="ignore")], mode=mode,
                               on_unused_input="ignore")
    prior_fn = pytensor.function([u, base_mean], [loc, scale], mode=mode, on_unused_input="ignore")
    _HYPER_CACHE[key] = (obj_fn, prior_fn, driven, pos)
    return _HYPER_CACHE[key]


def _initial_u(lay: Layout) -> np.ndarray:
    start = {"tau": 0.5, "a0": 0.05, "a1": 0.5, "sigma_d": 1.0}
    out = []
    for name, h in lay.scale_hyper.items():
        out.extend([np.log(start.get(name, 1.0))] * (1 if h.size is None else h.size))
    return np.array(out, dtype=float)


def _unpack_u(lay: Layout, u: np.ndarray) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, h in lay.scale_hyper.items():
        n = 1 if h.size is None else h.size
        out[name] = np.exp(u[pos]) if h.size is None else np.exp(u[pos : pos + n])
        pos += n
    return out


# ----------------------------------------------------------------------- the solver
def _initial_theta(data: CountData, lay: Layout, hyper_loc: np.ndarray) -> np.ndarray:
    theta = np.zeros((data.n_genes, len(lay.names)))
    if "Intercept" in lay.coef:
        theta[:, lay.coef.index("Intercept")] = np.log(data.base_mean + 0.1)
    theta[:, lay.n_coef :] = hyper_loc[:, lay.n_coef :]
    return theta


def fit_map(
    spec: Spec,
    data: CountData,
    max_sweeps: int = 40,
    hyper_tol: float = 2e-3,
    progress: bool = False,
    hyper_genes: int = HYPER_GENES,
) -> MapState:
    """Fit a template by batched MAP with marginal hyperparameters, then Laplace.

    The shared hyperparameters are learned on at most ``hyper_genes`` genes
    (a deterministic subset spread evenly over base means: a few shared
    numbers need no more); every gene is then fitted with them fixed.

    Returns
    -------
    MapState
        Modes, Laplace covariances, hyperparameters and per-gene convergence.
    """
    lay = layout(spec, data)
    t0 = time.perf_counter()
    obj_fn, prior_fn, driven, n_u = _hyper_functions(spec, lay)
    sub_rows = _hyper_subset(data.base_mean, hyper_genes)
    sub = data if sub_rows is None else data.subset_genes(sub_rows)
    prob_sub = GeneProblem(spec, sub, lay)
    prob = prob_sub if sub is data else GeneProblem(spec, data, lay)
    t_compile = time.perf_counter() - t0
    t1 = time.perf_counter()
    mix = lay.mixture
    slope_idx = np.array(lay.slope_index, dtype=int)
    grid = mix.grid() if mix is not None else None
    with progress_bar(progress, "MAP sweeps", total=max_sweeps + 1) as bar:
        u, pi, sweeps = _estimate_hyper(prob_sub, sub, lay, obj_fn, prior_fn, driven, n_u, max_sweeps, hyper_tol, bar)
        state = _fit_genes(prob, data, lay, prior_fn, u, pi, slope_idx, grid)
        bar.advance()
    if sweeps >= max_sweeps:
        log.warning("MAP hyperparameters did not settle in %d sweeps; results may be approximate", max_sweeps)
    if (~state.converged).any():
        log.warning("%d genes did not converge on the MAP path; they are flagged 'map_not_converged'",
                    int((~state.converged).sum()))
    state.hyper = _unpack_u(lay, u)
    if mix is not None:
        state.hyper["pi"] = pi
    state.n_sweeps = sweeps
    state.timings = {"compile_seconds": t_compile, "kernel_compile_seconds": prob.compile_seconds,
                     "solve_seconds": time.perf_counter() - t1, "hyper_genes": int(sub.n_genes)}
    return state


def _hyper_subset(base_mean: np.ndarray, n: int):
    """Every k-th gene in base-mean order (deterministic), or None if all genes fit."""
    G = base_mean.size
    if G <= n:
        return None
    order = np.argsort(base_mean, kind="stable")
    return np.sort(order[np.unique(np.linspace(0, G - 1, n).round().astype(int))])


def _priors(prior_fn, u, pi, base_mean, slope_idx, grid):
    loc, scale = prior_fn(u, base_mean)
    if grid is not None:
        # Sweeps use the moment-matched normal of the current mixture.
        scale[:, slope_idx] = np.sqrt(np.sum(pi * grid**2))
    return loc, scale


def _estimate_hyper(prob, data, lay, obj_fn, prior_fn, driven, n_u, max_sweeps, hyper_tol, bar):
    """Alternate per-gene modes and the marginal hyperparameter criterion."""
    mix = lay.mixture
    slope_idx = np.array(lay.slope_index, dtype=int)
    grid = mix.grid() if mix is not None else None
    pi = mix.concentration() / mix.concentration().sum() if mix is not None else None
    groups = list(driven) + ([slope_idx] if mix is not None else [])
    u = _initial_u(lay)
    loc, scale = _priors(prior_fn, u, pi, data.base_mean, slope_idx, grid)
    weak_theta = [_initial_theta(data, lay, loc) for _ in groups]
    usable = data.flags == ""
    rows = np.arange(data.n_genes)
    sweeps = 0
    while groups and sweeps < max_sweeps:
        # Each group's likelihood summary comes from a mode where only that
        # group's prior is widened, so the summary does not feed on its own prior.
        xhat, s2, mask = (np.zeros((data.n_genes, len(lay.names))) for _ in range(3))
        quad = None
        for gi, ks in enumerate(groups):
            wscale = scale.copy()
            wscale[:, ks] = np.maximum(WEAK_SCALE, 10.0 * scale[:, ks])
            weak_theta[gi], conv, _ = newton(prob, weak_theta[gi], loc, wscale)
            _, _, H = prob.derivs(weak_theta[gi], rows, loc, wscale)
            dispersion_group = prob.Q > 0 and prob.P in set(ks)
            if prob.Q == 1 and not dispersion_group and mix is None:
                # Coefficient summaries feed the scale criterion: they carry the
                # dispersion's uncertainty (integrated out). With a mixture prior they only
                # gate which components are fitted, and the plain Laplace summary does.
                cov0, _ = laplace_cov(H)
                mean, cov_int = mixture_moments(*integrate_gene_params(prob, weak_theta[gi], cov0, rows, loc, wscale))
                xs, ss, ms = summaries_from_cov(mean, cov_int, loc, wscale, usable & conv)
            else:
                xs, ss, ms = likelihood_summaries(weak_theta[gi], H, loc, wscale, usable & conv)
            if dispersion_group:
                # One Newton step of the Cox-Reid adjusted likelihood from its unadjusted mode.
                xs[:, prob.P :] += ss[:, prob.P :] * prob.cox_reid_grad(weak_theta[gi], rows, H)
            xhat[:, ks], s2[:, ks], mask[:, ks] = xs[:, ks], ss[:, ks], ms[:, ks]
            if dispersion_group:
                quad = _dispersion_quadrature(prob, weak_theta[gi], xs[:, prob.P], ss[:, prob.P],
                                              ms[:, prob.P] > 0, loc, scale)
                mask[:, prob.P] = 0.0  # the quadrature replaces the Gaussian summary
        if quad is None:
            quad = (np.zeros((data.n_genes, 1)), np.zeros((data.n_genes, 1)), np.zeros(data.n_genes))
        change = 0.0
        if n_u:
            res = optimize.minimize(
                lambda v: tuple(np.asarray(a, dtype=float) for a in obj_fn(v, xhat, s2, mask, data.base_mean, *quad)),
                u, jac=True, method="L-BFGS-B", bounds=[(-12.0, 8.0)] * n_u,
            )
            change = np.max(np.abs(res.x - u))
            u = res.x
        if mix is not None:
            # Mixture weights from each gene's Laplace evidence under every component that
            # can matter: a null gene re-fitted with its slope at zero also re-fits its
            # dispersion, which no Gaussian summary at the unconstrained mode can show.
            slope_theta = weak_theta[-1]
            pred = np.log(np.maximum(pi, 1e-300))[None, :] + component_loglik(
                xhat[:, slope_idx], s2[:, slope_idx], mask[:, slope_idx], grid)
            live = (pred >= pred.max(axis=1, keepdims=True) - np.log(1e6)) & (pi > 0)[None, :]
            live &= mask[:, slope_idx].all(axis=1, keepdims=True)
            _, _, log_w = _mixture_components(prob, slope_theta, loc, scale, slope_idx, grid, pi, live,
                                              np.zeros(data.n_genes, dtype=int))
            log_z = np.where(live, log_w - np.log(np.maximum(pi, 1e-300))[None, :], -np.inf)
            new_pi = mixture_weights_em(None, None, None, grid, mix.concentration(), pi0=pi, loglik=log_z)
            change = max(change, np.max(np.abs(new_pi - pi)))
            pi = new_pi
        loc, scale = _priors(prior_fn, u, pi, data.base_mean, slope_idx, grid)
        sweeps += 1
        bar.advance()
        log.debug("sweep %d: hyper %s pi %s (change %.2e)", sweeps, _unpack_u(lay, u), pi, change)
        if change < hyper_tol:
            break
    return u, pi, sweeps


_Q_X, _Q_W = np.polynomial.hermite.hermgauss(7)


def _dispersion_quadrature(prob, theta, xhat, s2, usable, loc, scale):
    """Nodes and log weights to integrate each gene's likelihood of its log-dispersion.

    The integrand is the Laplace-integrated likelihood (coefficients re-fitted at
    each node under their prior: the Cox-Reid adjustment) times the trend prior;
    nodes sit on the Gaussian posterior at the current hyperparameters, so they
    cover the region that matters even for low-count genes whose likelihood is flat.
    """
    P = prob.P
    G = theta.shape[0]
    rows = np.flatnonzero(usable)
    m, sig2 = loc[:, P], scale[:, P] ** 2
    vq = 1.0 / (1.0 / s2 + 1.0 / sig2)
    mq = vq * (xhat / s2 + m / sig2)
    nodes = mq[:, None] + np.sqrt(2.0 * vq)[:, None] * _Q_X[None, :]
    qlog = np.zeros((G, _Q_X.size))
    pin_scale = scale.copy()
    pin_scale[:, P] = 1e-6
    for i in range(_Q_X.size):
        pin_loc = loc.copy()
        pin_loc[:, P] = nodes[:, i]
        th = theta.copy()
        th[:, P] = nodes[:, i]
        th, _, _ = newton(prob, th, pin_loc, pin_scale, rows=rows)
        ll, _, H = prob.derivs(th[rows], rows, pin_loc, pin_scale)
        z = (th[rows, :P] - loc[rows, :P]) / scale[rows, :P]
        _, logdet = np.linalg.slogdet(-H[:, :P, :P])
        log_q = -0.5 * (nodes[rows, i] - mq[rows]) ** 2 / vq[rows] - 0.5 * np.log(2 * np.pi * vq[rows])
        qlog[rows, i] = ll - 0.5 * np.sum(z * z, axis=1) - 0.5 * logdet - log_q + np.log(_Q_W[i] / np.sqrt(np.pi))
    ok = usable & np.all(np.isfinite(qlog), axis=1)
    qlog[~ok] = 0.0
    # A per-gene constant does not move the hyperparameters; centring keeps exp() tame.
    qlog -= qlog.max(axis=1, keepdims=True)
    return nodes, qlog, ok.astype(float)


def _fit_genes(prob, data, lay, prior_fn, u, pi, slope_idx, grid) -> MapState:
    """Every gene's modes and Laplace covariances with the hyperparameters fixed."""
    G = data.n_genes
    rows = np.arange(G)
    loc, scale = _priors(prior_fn, u, pi, data.base_mean, slope_idx, grid)
    theta0 = _initial_theta(data, lay, loc)
    # The near-MLE fit (coefficient prior widened): Wald tests, and the start for the rest.
    mle_scale = scale.copy()
    if slope_idx.size:
        mle_scale[:, slope_idx] = np.maximum(WEAK_SCALE, 10.0 * scale[:, slope_idx])
    mle_mode, _, n_iter = newton(prob, theta0, loc, mle_scale)
    _, _, H = prob.derivs(mle_mode, rows, loc, mle_scale)
    mle_cov, _ = laplace_cov(H)
    # Wald tests use the coefficient variance with the dispersion integrated out.
    _, mle_cov_int = mixture_moments(*integrate_gene_params(prob, mle_mode, mle_cov, rows, loc, mle_scale))
    mle_cov_int[:, prob.P :, prob.P :] = mle_cov[:, prob.P :, prob.P :]
    if grid is None:
        theta, conv, more = newton(prob, mle_mode.copy(), loc, scale)
        n_iter += more
        modes, conv_c, log_w = theta[:, None, :], conv[:, None], np.zeros((G, 1))
        live = np.ones((G, 1), dtype=bool)
    else:
        # Gate components by the normal-means weights of the near-MLE summaries, so
        # each component is fitted only where it can matter.
        xs, ss, ms = likelihood_summaries(mle_mode, H, loc, mle_scale, np.ones(G, dtype=bool))
        pred = np.log(np.maximum(pi, 1e-300))[None, :] + component_loglik(
            xs[:, slope_idx], ss[:, slope_idx], ms[:, slope_idx], grid)
        live = (pred >= pred.max(axis=1, keepdims=True) - np.log(1e6)) & (pi > 0)[None, :]
        live |= ~ms[:, slope_idx].all(axis=1, keepdims=True)  # no usable summary: fit every component
        modes, conv_c, log_w = _mixture_components(prob, mle_mode, loc, scale, slope_idx, grid, pi, live, n_iter)
    cov = np.broadcast_to(mle_cov[:, None], modes.shape[:2] + mle_cov.shape[1:]).copy()
    pd_ok = np.ones(live.shape, dtype=bool)
    for c in range(modes.shape[1]):
        r = np.flatnonzero(live[:, c])
        if r.size:
            cl, cs = _component_prior(loc, scale, slope_idx, grid, c)
            _, _, Hc = prob.derivs(modes[r, c], r, cl, cs)
            cov[r, c], pd_ok[r, c] = laplace_cov(Hc)
    log_w = np.where(live, log_w, -np.inf)
    weights = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    negligible = weights < 1e-6
    converged = np.all(conv_c | negligible, axis=1) & np.all(pd_ok | negligible, axis=1)
    best = modes[rows, weights.argmax(axis=1)]
    loglik = prob.loglik(best, rows)
    # Integrate the gene parameters out within every live component: the posterior is a
    # mixture over (component, quadrature node).
    n_nodes = N_NODES if prob.Q == 1 else 1
    C = modes.shape[1]
    out_modes = np.repeat(modes, n_nodes, axis=1)
    out_cov = np.repeat(cov, n_nodes, axis=1)
    out_w = np.repeat(weights / n_nodes, n_nodes, axis=1)
    for c in range(C):
        r = np.flatnonzero(live[:, c] & ~negligible[:, c])
        if r.size and n_nodes > 1:
            cl, cs = _component_prior(loc, scale, slope_idx, grid, c)
            th, cv, wn = integrate_gene_params(prob, modes[r, c], cov[r, c], r, cl, cs)
            sl = slice(c * n_nodes, (c + 1) * n_nodes)
            out_modes[r, sl], out_cov[r, sl] = th, cv
            out_cov[r, sl, prob.P :, prob.P :] = 1e-12
            out_w[r, sl] = weights[r, c, None] * wn
    top = weights.argmax(axis=1)
    return MapState(mode=out_modes, cov=out_cov, weights=out_w, prior_component=np.repeat(np.arange(C), n_nodes),
                    map_mode=best, map_cov=cov[rows, top],
                    mle_mode=mle_mode, mle_cov=mle_cov_int, hyper={},
                    converged=converged, n_iter=n_iter, loglik=loglik, names=lay.names)


def _component_prior(loc, scale, slope_idx, grid, c):
    if grid is None:
        return loc, scale
    sc = scale.copy()
    sc[:, slope_idx] = grid[c]
    return loc, sc


def _mixture_components(prob, start, loc, scale, slope_idx, grid, pi, live, n_iter_total):
    """Per-component modes and log weights ``log pi_k + log Laplace evidence`` on live genes."""
    G = start.shape[0]
    modes = np.repeat(start[:, None, :], grid.size, axis=1)
    conv = np.ones((G, grid.size), dtype=bool)
    log_w = np.full((G, grid.size), -np.inf)
    # Warm-start from the widest component down so each start is close to the next mode.
    prev = start.copy()
    for c in range(grid.size - 1, -1, -1):
        r = np.flatnonzero(live[:, c])
        if r.size == 0:
            continue
        cl, cs = _component_prior(loc, scale, slope_idx, grid, c)
        th, ok, n_iter = newton(prob, prev.copy(), cl, cs, rows=r)
        n_iter_total += n_iter
        _, _, H = prob.derivs(th[r], r, cl, cs)
        sign, logdet = np.linalg.slogdet(-H)
        # Laplace evidence up to terms shared by all components (their other priors).
        log_w[r, c] = (np.log(max(pi[c], 1e-300)) + prob.logpost(th[r], r, cl, cs)
                       - slope_idx.size * np.log(grid[c]) - 0.5 * logdet)
        modes[r, c], conv[r, c] = th[r], ok[r] & (sign > 0)
        prev[r] = th[r]
    return modes, conv, log_w


def laplace_draws(state: MapState, draws: int, random_seed) -> np.ndarray:
    """Draws ``(draws, G, K)`` from each gene's (mixture of) Laplace approximations."""
    rng = np.random.default_rng(random_seed)
    G, C, K = state.mode.shape
    cdf = np.cumsum(state.weights, axis=1)
    comp = np.minimum((rng.random((draws, G, 1)) > cdf[None]).sum(axis=2), C - 1)  # (draws, G)
    z = rng.standard_normal((draws, G, K))
    L = np.linalg.cholesky(state.cov.reshape(-1, K, K) + 1e-12 * np.eye(K))  # (G*C, K, K)
    mode = state.mode.reshape(-1, K)
    base = np.arange(G) * C
    out = np.empty((draws, G, K))
    # Chunks of draws keep the gathered Cholesky factors small.
    step = max(1, 400_000 // max(G, 1))
    for d0 in range(0, draws, step):
        sel = (base[None, :] + comp[d0 : d0 + step]).reshape(-1)
        zz = z[d0 : d0 + step].reshape(-1, K)
        out[d0 : d0 + step] = (mode[sel] + np.einsum("nkl,nl->nk", L[sel], zz)).reshape(-1, G, K)
    return out


def pointwise_loglik(spec: Spec, data: CountData, lay: Layout, theta_draws: np.ndarray) -> np.ndarray:
    """Log-likelihood ``(draw, gene, obs)`` of Laplace draws ``(draw, gene, K)``."""
    prob = GeneProblem(spec, data, lay)
    rows = np.arange(data.n_genes)
    out = np.empty((theta_draws.shape[0], data.n_genes, data.n_obs))
    for d in range(theta_draws.shape[0]):
        eta, params = prob._eta_params(theta_draws[d], rows)
        out[d] = prob.pointwise(prob.y, eta, *params)
    return out
