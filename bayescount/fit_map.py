"""The genome-scale MAP + Laplace path.

1. Every gene is fitted once (batched Newton, :mod:`bayescount.newton`) under a
   weak slope prior; its log-dispersion is then integrated out by quadrature
   with the coefficients re-fitted at each node (:mod:`bayescount.quadrature`).
2. Swapping the weak slope prior for each LFC-prior component is closed-form,
   so each gene's posterior is a mixture over (node, component) pairs.
3. The shared hyperparameters maximize the resulting marginal likelihood:
   trend parameters by L-BFGS on a compiled criterion, mixture weights by
   penalized maximum likelihood, alternating on fixed node tables; sweeps on a
   gene subset re-centre the nodes, and a last round uses every gene.
They are never taken from the joint mode, where scales collapse toward zero.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import optimize

from ._linalg import one_blas_thread, spd_inverse
from ._threads import gene_chunks, map_rows, resolve_threads, run_chunks
from .data import CountData
from .map_hyper import _bounds, _hyper_functions, _initial_u, _moved, _unpack_u
from .model import Layout, layout
from .newton import GeneProblem, laplace_cov, mixture_moments, newton, summaries_from_cov
from .progress import progress_bar
from .quadrature import (NodeTable, component_slots, conditional_block, dispersion_nodes, likelihood_slices,
                         node_prior, scale_nodes, scale_posterior)
from .slots import select_slots, slot_moments
from .spec import Spec
from .stats import logsumexp_components, logsumexp_nodes, mixture_weights

log = logging.getLogger(__name__)

#: Prior sd of the slopes in the weak fits (no narrower than any prior component).
WEAK_SCALE = 8.0
HYPER_GENES = 2000
#: Hyperparameter moves below which the quadrature nodes are not re-centred.
SWEEP_TOL = 0.02
#: Each gene's posterior keeps its heaviest (node, component) pairs ("slots") until they hold
#: all but SLOT_MASS_TOL of its mass, at most MAX_SLOTS (the arrays are as wide as the
#: neediest gene's count; the others' extra slots carry weight 0, so a gene's answers do
#: not depend on which genes it is fitted with). The dropped pairs are the tails (with donor effects: the nodes of large
#: random-effect sds, whose LFC posteriors are widest). A fixed 24 dropped 2.3% of the
#: mass on average (up to 11%) with (1|donor), and the LFCs' 90% intervals covered 0.865
#: instead of 0.88 in simulation-based calibration; nb_trend needs 18-27.
SLOT_MASS_TOL = 1e-3
MAX_SLOTS = 96


@dataclass
class MapState:
    """Result of the MAP + Laplace fit, all arrays over genes."""

    mode: np.ndarray  # (G, C, K) per (dispersion node, LFC-prior component) pair kept
    cov: np.ndarray  # (G, C, K, K) Laplace covariances
    weights: np.ndarray  # (G, C) posterior component weights
    prior_component: np.ndarray  # (G, C) which LFC-prior component each column belongs to
    map_mode: np.ndarray  # (G, K) the posterior mode (heaviest prior component)
    map_cov: np.ndarray  # (G, K, K) its Laplace covariance
    mle_mode: np.ndarray  # (G, K) mode with the coefficient prior widened (for Wald tests)
    mle_cov: np.ndarray  # (G, K, K)
    hyper: dict[str, np.ndarray]
    converged: np.ndarray  # (G,) bool
    n_iter: np.ndarray  # (G,) Newton iterations summed over sweeps
    loglik: np.ndarray  # (G,) log-likelihood at the mode
    log_evidence: np.ndarray  # (G,) log marginal likelihood given the hyperparameters (quadrature-Laplace)
    names: tuple[str, ...]
    re_log_sd: np.ndarray | None = None  # (G, C, T) random-effect log scales of each slot
    n_sweeps: int = 0
    timings: dict = field(default_factory=dict)


# ----------------------------------------------------------------------- the solver
def _initial_theta(data: CountData, lay: Layout, hyper_loc: np.ndarray) -> np.ndarray:
    K = len(lay.names)
    theta = np.zeros((data.n_genes, K))
    # Coefficients from least squares on log counts (one product for every gene): Newton
    # then starts a few steps from the mode rather than from zero fold changes.
    X = data.design.matrix
    z = np.log(data.counts + 0.5) - data.offset[None, :]
    theta[:, : X.shape[1]] = z @ np.linalg.pinv(X).T
    theta[:, lay.n_linear :] = hyper_loc[:, lay.n_linear : K]
    return theta


def fit_map(
    spec: Spec,
    data: CountData,
    max_sweeps: int = 40,
    hyper_tol: float = 2e-3,
    progress: bool = False,
    hyper_genes: int = HYPER_GENES,
    n_threads: int | None = None,
) -> MapState:
    """Fit a template by batched MAP with marginal hyperparameters, then Laplace.

    The shared hyperparameters are learned on at most ``hyper_genes`` genes
    (a deterministic subset spread evenly over base means: a few shared
    numbers need no more); every gene is then fitted with them fixed.
    Per-gene work runs in contiguous gene chunks on ``n_threads`` threads
    (default: :func:`~bayescount._threads.default_threads`); the answers
    agree to rounding whatever the number.

    Returns
    -------
    MapState
        Modes, Laplace covariances, hyperparameters and per-gene convergence.
    """
    lay = layout(spec, data)
    n_threads = resolve_threads(n_threads)
    t0 = time.perf_counter()
    hf = _hyper_functions(spec, lay)
    sub_rows = _hyper_subset(data.base_mean, hyper_genes)
    sub = data if sub_rows is None else data.subset_genes(sub_rows)
    prob_sub = GeneProblem(spec, sub, lay)
    prob = prob_sub if sub is data else GeneProblem(spec, data, lay)
    t_compile = time.perf_counter() - t0
    t1 = time.perf_counter()
    with progress_bar(progress, "MAP sweeps", total=max_sweeps + 1) as bar:
        u, pi, sweeps, q = _estimate_hyper(prob_sub, sub, lay, hf, max_sweeps, hyper_tol, bar, n_threads)
        state, u, pi = _fit_genes(prob, data, lay, hf, u, pi, hyper_tol, refine=sub is not data,
                                  q=q if sub is data else None, n_threads=n_threads)
        bar.advance()
    if sweeps >= max_sweeps:
        log.warning("MAP hyperparameters did not settle in %d sweeps; results may be approximate", max_sweeps)
    if (~state.converged).any():
        log.warning("%d genes did not converge on the MAP path; they are flagged 'map_not_converged'",
                    int((~state.converged).sum()))
    state.n_sweeps = sweeps
    state.timings = {"compile_seconds": t_compile, "kernel_compile_seconds": prob.compile_seconds,
                     "solve_seconds": time.perf_counter() - t1, "hyper_genes": int(sub.n_genes),
                     "n_threads": n_threads}
    return state


def _hyper_subset(base_mean: np.ndarray, n: int):
    """Every k-th gene in base-mean order (deterministic), or None if all genes fit."""
    G = base_mean.size
    if G <= n:
        return None
    order = np.argsort(base_mean, kind="stable")
    return np.sort(order[np.unique(np.linspace(0, G - 1, n).round().astype(int))])


class _Priors:
    """Prior locations/scales at hyperparameters ``u`` and the weak prior the fits run under."""

    def __init__(self, prior_fn, lay: Layout, u, base_mean):
        self.P = lay.n_linear
        K = len(lay.names)
        loc, scale = prior_fn(u, base_mean)
        self.loc, self.scale = loc[:, :K].copy(), scale[:, :K].copy()
        self.integrated = lay.integrated
        # (G, T) prior means and sds of the integrated coordinates, or None.
        self.loc_d, self.scale_d = (loc[:, self.integrated], scale[:, self.integrated]) if self.integrated else (None, None)
        self.re_cols = lay.re_index
        self.term_of = np.array(lay.re_term_of, dtype=int)
        # Group-level effects keep a fixed placeholder scale here (1, from the prior table):
        # each quadrature node sets their prior sd, so it must not move with the hyperparameters.
        self.n_re = len(lay.re_terms)
        self.n_fixed = len(self.integrated) - self.n_re  # integrated coordinates inside theta
        self.cond = conditional_block(self.P, K, max(self.n_fixed, 1))
        self.slope_idx = np.array(lay.slope_index, dtype=int)
        self.grid = lay.mixture.grid() if lay.mixture is not None else None
        self.wscale = self.scale.copy()
        if self.slope_idx.size:
            wide = np.maximum(WEAK_SCALE, 10.0 * self.scale[:, self.slope_idx])
            if self.grid is not None:
                wide = np.full_like(wide, max(WEAK_SCALE, self.grid.max()))
            self.wscale[:, self.slope_idx] = wide

    def take(self, genes: slice) -> "_Priors":
        """The priors of a contiguous range of genes (views)."""
        part = copy.copy(self)
        for name in ("loc", "scale", "wscale", "loc_d", "scale_d"):
            value = getattr(self, name)
            setattr(part, name, None if value is None else value[genes])
        return part

    @property
    def has_re(self) -> bool:
        return self.re_cols.size > 0

    @property
    def product_nodes(self) -> bool:
        """Several integrated coordinates (random-effect scales, per-level dispersions): a product grid."""
        return self.has_re or self.n_fixed > 1

    def with_re_scale(self, scale, log_sd):
        """``scale`` with the group-level effects' prior sd at ``exp(log_sd)`` (G, T)."""
        out = scale.copy()
        if self.has_re:
            out[:, self.re_cols] = np.exp(log_sd[:, : self.n_re][:, self.term_of])
        return out

    @property
    def fixed_dims(self):
        """(dimension of the node table, theta coordinate) of integrated coordinates inside theta."""
        return [(self.n_re + j, self.P + j) for j in range(self.n_fixed)]

    def component_precisions(self) -> np.ndarray:
        """(C, G, B) prior precisions of the conditional block under each LFC-prior component."""
        prec = 1.0 / self.scale[:, self.cond] ** 2
        if self.grid is None:
            return prec[None]
        out = np.repeat(prec[None], self.grid.size, axis=0)
        out[:, :, self.slope_idx] = (1.0 / self.grid**2)[:, None, None]
        return out

    def component_scale(self, c):
        sc = self.scale.copy()
        if self.grid is not None:
            sc[:, self.slope_idx] = self.grid[c]
        return sc


def _weak_fit(prob, data, lay, pr: _Priors, start=None, q=None, sliced=None, passes=2):
    """Joint mode under the weak coefficient prior, its Laplace covariance and quadrature nodes.

    ``q``: (mean, sd) of each gene's random-effect log scales from an earlier
    table, used to place the nodes; without it they are placed in ``passes``
    passes first (each re-centres them on the genes' posteriors).
    ``sliced``: a coordinate whose likelihood slices the table should carry.
    """
    rows = np.arange(data.n_genes)
    theta0 = _initial_theta(data, lay, pr.loc) if start is None else start
    # Group-level effects: the joint fit puts their prior sd at the scales' prior median.
    jscale = pr.with_re_scale(pr.wscale, pr.loc_d) if pr.has_re else pr.wscale
    theta, conv, n_iter, H, _ = newton(prob, theta0, pr.loc, jscale, curvature=True)
    cov, pd_ok = laplace_cov(H)
    if pr.product_nodes:
        # Random-effect scales (and the log-dispersions): nodes first spread over the scales' prior
        # and the dispersions' Laplace approximation, then re-centred on each gene's posterior.
        sd_floor = np.minimum(0.05, pr.scale_d)
        sd_cap = pr.scale_d.copy()
        args = (prob, theta, pr.loc, pr.wscale, pr.re_cols, pr.term_of)
        kw = {"cond": pr.cond, "fixed": pr.fixed_dims}
        if q is None:
            q_mean, q_sd = pr.loc_d.copy(), pr.scale_d.copy()
            for dim, k in pr.fixed_dims:
                q_mean[:, dim] = theta[:, k]
                q_sd[:, dim] = np.sqrt(np.clip(cov[:, k, k], 0.01, 4.0))
                sd_cap[:, dim] = np.maximum(sd_cap[:, dim], q_sd[:, dim])
            q = (q_mean, q_sd)
            for _ in range(passes):
                table = scale_nodes(*args, q[0], np.clip(q[1], sd_floor, sd_cap), **kw)
                q = scale_posterior(table, pr.loc_d, pr.scale_d)
        table = scale_nodes(*args, q[0], np.clip(q[1], sd_floor, np.maximum(sd_cap, pr.scale_d)), **kw)
    else:
        table = dispersion_nodes(prob, theta, cov, rows, pr.loc, pr.wscale,
                                 null_coords=pr.slope_idx if pr.grid is not None else None)
    if sliced is not None:
        table.slices = likelihood_slices(prob, theta, cov, sliced)
    return theta, cov, table, conv & pd_ok & table.ok, n_iter


@dataclass
class _Genes:
    """A fit's genes cut into contiguous chunks, each with views of the problem and the data, for threads."""

    parts: list  # (slice, GeneProblem, CountData) per chunk
    n_threads: int

    @classmethod
    def split(cls, prob: GeneProblem, data: CountData, n_threads: int) -> "_Genes":
        chunks = gene_chunks(data.n_genes, n_threads, data.n_obs)
        if len(chunks) == 1:
            return cls([(slice(0, data.n_genes), prob, data)], 1)
        return cls([(sl, prob.take(sl), data.subset_genes(sl)) for sl in chunks], n_threads)

    def map(self, fn) -> list:
        """``fn(genes, prob, data)`` for every chunk, on the threads."""
        return run_chunks(lambda part: fn(*part), self.parts, self.n_threads)


def _weak_fit_genes(genes: _Genes, lay, pr: _Priors, start=None, q=None, sliced=None, passes=2):
    """:func:`_weak_fit` of every gene, chunk by chunk on threads, joined in gene order."""

    def one(sl, prob, data):
        return _weak_fit(prob, data, lay, pr.take(sl), None if start is None else start[sl],
                         None if q is None else (q[0][sl], q[1][sl]), sliced, passes)

    parts = genes.map(one)
    if len(parts) == 1:
        return parts[0]
    theta, cov, tables, ok, n_iter = zip(*parts)
    return (np.concatenate(theta), np.concatenate(cov), NodeTable.concat(list(tables)), np.concatenate(ok),
            np.concatenate(n_iter))


def _node_moments(table, pr: _Priors):
    """Mean and covariance of the conditional block under the weak prior, log-dispersion integrated out."""
    w = table.base + node_prior(table, pr.loc_d, pr.scale_d)
    w = np.exp(w - w.max(axis=1, keepdims=True))
    return mixture_moments(table.b, spd_inverse(table.prec), w / w.sum(axis=1, keepdims=True))


def _coef_summaries(table, pr: _Priors, keep):
    """Gaussian likelihood summaries of the conditional block with the log-dispersion integrated out."""
    mean, cov = _node_moments(table, pr)
    return summaries_from_cov(mean, cov, pr.loc[:, pr.cond], pr.wscale[:, pr.cond], keep)


@one_blas_thread
def _estimate_hyper(prob, data, lay, hf, max_sweeps, hyper_tol, bar, n_threads: int = 1):
    """Hyperparameters maximizing the quadrature-Laplace marginal likelihood of the genes.

    Each sweep fits every gene under the weak coefficient prior and builds its
    node table; with the table fixed, the mixture weights and the other
    hyperparameters alternate to their optimum (:func:`_hyper_on_table`). A
    new sweep re-centres the nodes at the new hyperparameters.
    """
    mix = lay.mixture
    pi = mix.concentration() / mix.concentration().sum() if mix is not None else None
    u = _initial_u(lay)
    theta, q, last_step = None, None, None
    sweeps = 0
    genes = _Genes.split(prob, data, n_threads)
    pr = _Priors(hf.prior_fn, lay, u, data.base_mean)
    while sweeps < max_sweeps and (hf.n_u or mix is not None):
        # The first table only moves the hyperparameters from their starting guess: one pass
        # placing its nodes does that as well as two (the same sweeps over four seeds, and the
        # tables to 6e-4), at a node table less per fit.
        theta, _, table, ok, _ = _weak_fit_genes(genes, lay, pr, theta, q, sliced=hf.sliced, passes=1)
        u_sweep, pi_sweep = u.copy(), None if pi is None else pi.copy()
        u, pi, _ = _hyper_on_table(prob, data, lay, hf, table, ok, u, pi, hyper_tol, n_threads=n_threads)
        step = u - u_sweep
        if last_step is not None and hf.n_u and step @ last_step < -0.5 * (step @ step):
            # The fixed point is cycling (a hyperparameter the genes barely pin down): halve the step.
            u = u_sweep + 0.5 * step
            step = 0.5 * step
        last_step = step
        pr_sweep, pr = pr, _Priors(hf.prior_fn, lay, u, data.base_mean)
        if pr.product_nodes:
            # The next table's nodes go where the new hyperparameters put each gene's scales and
            # dispersions (this table's nodes reweighted by the new prior). Placed under the old
            # prior, a shrinking scatter (sigma_d, re_sigma) crawled toward its optimum by a node
            # spacing per sweep: 15 sweeps instead of 7 with (1|donor) and 20% DE genes, and a
            # stop at sigma_d 0.14 (its truth 0) where the crawl slowed below SWEEP_TOL.
            q = scale_posterior(table, pr.loc_d, pr.scale_d)
        sweeps += 1
        bar.advance()
        moved = _moved(lay, u_sweep, u, *_disp_locs(lay, pr_sweep, pr), data.base_mean) if hf.n_u else 0.0
        if pi is not None:
            moved = max(moved, np.max(np.abs(pi - pi_sweep)))
        log.debug("sweep %d: hyper %s pi %s (moved %.2e)", sweeps, _unpack_u(lay, u), pi, moved)
        if moved < SWEEP_TOL:
            break
    return u, pi, sweeps, q


def _disp_locs(lay, pr0: _Priors, pr1: _Priors):
    """The log-dispersion coordinates' prior locations under two sets of hyperparameters, or (None, None)."""
    cols = lay.param_cols.get("log_dispersion")
    if not cols:
        return None, None
    return pr0.loc[:, cols], pr1.loc[:, cols]


def _hyper_on_table(prob, data, lay, hf, table, ok, u, pi, hyper_tol, max_rounds=100, n_threads: int = 1):
    """Alternate mixture weights (penalized ML) and the compiled criterion on a fixed node table.

    Returns ``(u, pi, slots)``; ``slots`` is :func:`component_slots`' log
    ratios for the table when the prior swap does not move with ``u`` (so
    the caller need not recompute them), else None.
    """
    mix = lay.mixture
    if not hf.n_u and mix is None:
        return u, pi, None
    G = data.n_genes
    keep = (data.flags == "") & ok
    n_names = len(lay.names)
    xhat, s2, mask = np.zeros((G, n_names)), np.ones((G, n_names)), np.zeros((G, n_names))
    # Groups driven by hyperparameters other than the trend (tau, zero-inflation) use Gaussian
    # summaries of the conditional block; the log-dispersion (index P) uses the quadrature.
    block_groups = [ks for ks in hf.driven if not np.isin(ks, lay.integrated).any()]
    pr = _Priors(hf.prior_fn, lay, u, data.base_mean)
    if block_groups:
        xs, ss, ms = _coef_summaries(table, pr, keep)
        pos = {int(k): i for i, k in enumerate(pr.cond)}
        for ks in block_groups:
            cols = [pos[int(k)] for k in ks]
            xhat[:, ks], s2[:, ks], mask[:, ks] = xs[:, cols], ss[:, cols], ms[:, cols]
    slices = (np.zeros((G, 1)), np.zeros((G, 1)), np.zeros(G))
    if hf.sliced is not None and table.slices is not None:
        # The sliced coordinate enters through its likelihood slices, not a Gaussian summary.
        # Genes all zero in a group keep them: their zero part is informative (leaving out the
        # 1% of genes with the most zeros put zi_sigma 6% low in simulation-based calibration).
        snodes, slog = table.slices
        fin = np.all(np.isfinite(slog), axis=1)
        slices = (snodes, np.where(fin[:, None], slog, 0.0), (ok & fin).astype(float))
        mask[:, hf.sliced] = 0.0
    # The prior swap moves with u only through hyperparameter-driven block coordinates
    # (tau, the zero-inflation scale); without them it is computed once.
    fixed_ratio = None if block_groups else component_slots(table, pr.component_precisions(), n_threads, means=False)[0]
    bounds = _bounds(lay, u)
    for _ in range(max_rounds):
        pr = _Priors(hf.prior_fn, lay, u, data.base_mean)
        log_ratio = (fixed_ratio if fixed_ratio is not None
                     else component_slots(table, pr.component_precisions(), n_threads, means=False)[0])
        change = 0.0
        if mix is not None:
            lp_d = node_prior(table, pr.loc_d, pr.scale_d)
            comp_ll = map_rows(logsumexp_nodes, (table.base + lp_d, log_ratio), n_threads)
            new_pi = mixture_weights(None, None, None, pr.grid, mix.concentration(), pi0=pi,
                                        loglik=np.where(keep[:, None], comp_ll, -np.inf))
            change = np.max(np.abs(new_pi - pi))
            pi = new_pi
            log_pi = np.log(np.maximum(pi, 1e-300))
            evidence = map_rows(lambda lr: logsumexp_components(log_pi, lr), (log_ratio,), n_threads)
        else:
            evidence = log_ratio[:, :, 0]
        if hf.n_u:
            qlog = table.base + evidence
            qlog = np.where(np.isfinite(qlog), qlog, -1e300)
            qlog -= qlog.max(axis=1, keepdims=True)
            quad = (table.d, qlog, (keep & bool(lay.integrated)).astype(float), *slices)
            res = optimize.minimize(
                lambda v: tuple(np.asarray(a, dtype=float) for a in hf.obj_fn(v, xhat, s2, mask, data.base_mean, *quad)),
                u, jac=True, method="L-BFGS-B", bounds=bounds,
            )
            change = max(change, np.max(np.abs(res.x - u)))
            u = res.x
        if change < hyper_tol:
            break
    return u, pi, fixed_ratio


@one_blas_thread
def _fit_genes(prob, data, lay, hf, u, pi, hyper_tol, refine: bool, q=None, n_threads: int = 1):
    """Every gene's posterior; with ``refine`` the hyperparameters first take a last step on all genes.

    Returns the MapState (its ``hyper`` set from them) and the final ``(u, pi)``.
    """
    genes = _Genes.split(prob, data, n_threads)
    pr = _Priors(hf.prior_fn, lay, u, data.base_mean)
    wmode, wcov, table, ok, n_iter = _weak_fit_genes(genes, lay, pr, q=q,
                                                     sliced=hf.sliced if refine else None)
    slots = None
    if refine:
        # The node tables of all genes are at hand: the hyperparameters (above all the
        # mixture weights, which a subset pins down poorly) use every gene.
        u, pi, slots = _hyper_on_table(prob, data, lay, hf, table, ok, u, pi, hyper_tol, n_threads=n_threads)
        pr = _Priors(hf.prior_fn, lay, u, data.base_mean)

    def one(sl, prob_c, data_c):
        return _gene_posteriors(prob_c, lay, pr.take(sl), table.take(sl), wmode[sl], wcov[sl], ok[sl], n_iter[sl],
                                None if slots is None else slots[sl], u, pi)

    return _join_states(genes.map(one), n_threads), u, pi


def _gene_posteriors(prob, lay, pr: _Priors, table, wmode, wcov, ok, n_iter, slots, u, pi) -> MapState:
    """The posterior mixtures, modes and Wald summaries of a range of genes, given their weak fits and node tables."""
    G = wmode.shape[0]
    rows = np.arange(G)
    comp_prec = pr.component_precisions()
    # The refinement's prior swap is reused when it did not depend on u (the same table and priors).
    log_ratio = slots if slots is not None else component_slots(table, comp_prec, means=False)[0]
    C = log_ratio.shape[2]
    log_pi = np.zeros(1) if pi is None else np.log(np.maximum(pi, 1e-300))
    lp_d = node_prior(table, pr.loc_d, pr.scale_d)
    top, weights, need, log_evidence = select_slots(table.base + lp_d, log_pi, log_ratio, 1.0 - SLOT_MASS_TOL,
                                                    MAX_SLOTS)
    S = top.shape[1]
    if S == MAX_SLOTS and need.max() == MAX_SLOTS:
        log.debug("posterior slots capped at %d", S)
    node_of, comp_of = top // C, top % C
    K = len(lay.names)
    modes = np.empty((G, S, K))
    covs = np.zeros((G, S, K, K))
    gi = rows[:, None]
    cond = pr.cond
    # Only the kept slots' moments are formed (a sixth of the (node, component) pairs for nb_trend).
    slot_moments(table, comp_prec, node_of, comp_of, modes, covs, cond, need)
    re_log_sd = None
    if pr.has_re:
        re_log_sd = table.d[gi, node_of][..., : pr.n_re]  # (G, S, T): the slot's node
        post_log_sd = scale_posterior(table, pr.loc_d, pr.scale_d)[0]
    for dim, k in pr.fixed_dims if prob.Q else []:
        modes[:, :, k] = table.d[gi, node_of, dim]
        covs[:, :, k, k] = 1e-12
    # Wald tests: the weak-prior (near-MLE) mode, its coefficient covariance with the gene
    # parameter integrated out, as DESeq2 tests its MLE.
    _, cov_int = _node_moments(table, pr)
    mle_cov = wcov.copy()
    mle_cov[:, cond[:, None], cond[None, :]] = cov_int
    # The posterior mode (under each gene's heaviest prior component) and its curvature.
    comp_w = np.bincount((rows[:, None] * C + comp_of).ravel(), weights=weights.ravel(), minlength=G * C).reshape(G, C)
    best_c = comp_w.argmax(axis=1)
    map_mode, map_cov = wmode.copy(), wcov.copy()
    conv_map = np.ones(G, dtype=bool)
    map_loglik = np.empty(G)
    # Start from the component's heaviest slot (its conditional mode at a dispersion node):
    # a few steps from the mode, where the weak fit can be far for genes shrunk to zero.
    slot_w = np.where(comp_of == best_c[:, None], weights, -1.0)
    start = modes[rows, slot_w.argmax(axis=1)].copy()
    for c in np.unique(best_c):
        r = np.flatnonzero(best_c == c)
        sc = pr.component_scale(c)
        if pr.has_re:
            sc = pr.with_re_scale(sc, post_log_sd)
        th, conv, more, H, ll = newton(prob, start.copy(), pr.loc, sc, rows=r, curvature=True)
        n_iter += more
        map_mode[r] = th[r]
        map_loglik[r] = ll[r]
        map_cov[r], pd_ok = laplace_cov(H[r])
        conv_map[r] = conv[r] & pd_ok
    state = MapState(mode=modes, cov=covs, weights=weights, prior_component=comp_of,
                     map_mode=map_mode, map_cov=map_cov, mle_mode=wmode, mle_cov=mle_cov,
                     hyper={**_unpack_u(lay, u), **({} if pi is None else {"pi": np.asarray(pi)})},
                     converged=ok & conv_map, n_iter=n_iter, loglik=map_loglik,
                     log_evidence=np.where(ok, log_evidence, np.nan), names=lay.names,
                     re_log_sd=re_log_sd)
    return state


def _join_states(parts: list[MapState], n_threads: int = 1) -> MapState:
    """One MapState from those of consecutive gene ranges.

    Their slot arrays are as wide as the neediest gene's count; a narrower
    range takes extra slots of weight 0 (copies of its first), as genes that
    need fewer slots do within a range. Each range is copied straight into
    its rows of the joined arrays, the ranges on threads.
    """
    if len(parts) == 1:
        return parts[0]
    S = max(p.mode.shape[1] for p in parts)
    starts = np.cumsum([0] + [p.mode.shape[0] for p in parts])
    out, per_gene = {}, []
    for f in fields(MapState):
        first = getattr(parts[0], f.name)
        if f.name in _SHARED or first is None:
            out[f.name] = first
            continue
        shape = (starts[-1], S, *first.shape[2:]) if f.name in _SLOTTED else (starts[-1], *first.shape[1:])
        out[f.name] = np.empty(shape, dtype=first.dtype)
        per_gene.append(f.name)

    def copy(i):
        rows = slice(starts[i], starts[i + 1])
        for name in per_gene:
            a, dst = getattr(parts[i], name), out[name][rows]
            if name not in _SLOTTED:
                dst[...] = a
                continue
            dst[:, : a.shape[1]] = a
            dst[:, a.shape[1] :] = 0 if name == "weights" else a[:, :1]

    run_chunks(copy, range(len(parts)), n_threads)
    return MapState(**out)


#: MapState fields that are not per gene, and the per-gene ones indexed by slot.
_SHARED = {"hyper", "names", "n_sweeps", "timings"}
_SLOTTED = {"mode", "cov", "weights", "prior_component", "re_log_sd"}
