"""Each gene's posterior as a mixture over gene-parameter nodes and LFC-prior components.

The gene parameter (log-dispersion) is integrated out by Gauss-Hermite
quadrature around its Laplace approximation; at every node the coefficients
are re-fitted (Newton, dispersion fixed) under a *weak* coefficient prior,
which gives their conditional Gaussian posterior and the Laplace-integrated
likelihood of the node. Swapping the weak prior for the template's prior on
the slopes (one Normal per mixture component, or the learned ``tau``) is then
a Gaussian identity, so every (node, component) pair has a closed-form
posterior and evidence without another pass over the data. Null genes thereby
borrow the dispersion they would have at zero effect: the nodes that explain
the data without an effect gain weight under the null component.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numba
import numpy as np

from ._linalg import chol_into, chol_solve
from ._nb_nodes import nb_nodes
from ._threads import gene_chunks, run_chunks
from .newton import MAX_STEP, capped

N_NODES = 7
#: Newton steps per random-effect-scale node, from the nearest node already fitted: nodes are
#: close, so one step's quadratic model (its log density and mode) gives two steps' answers to
#: 0.011 (LFC, lfsr; medians 0.001) and 4% (donor sds) at half the passes over the cells
#: (tests/test_random_effects.py holds them to that).
NODE_STEPS = 1
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(N_NODES)
_LOG2PI = np.log(2.0 * np.pi)


@dataclass
class NodeTable:
    """Per-gene quadrature over the gene parameter, coefficients conditional on each node.

    ``d``: (G, N, T) node values of the T integrated coordinates (zeros when there are none);
    ``base``: (G, N) log of ``integral p(y | beta, d_i) p_weak(beta) dbeta / q(d_i) x GH weight``;
    ``b``: (G, N, P) conditional modes under the weak prior; ``prec``: (G, N, P, P)
    their posterior precisions; ``ok``: (G,) every node finite; ``loc_b``,
    ``w_prec``: (G, P) the weak prior's means and precisions.
    """

    d: np.ndarray
    base: np.ndarray
    b: np.ndarray
    prec: np.ndarray
    ok: np.ndarray
    loc_b: np.ndarray
    w_prec: np.ndarray
    #: (nodes, log weights), (G, N_SLICE) each, of :func:`likelihood_slices`, when asked for.
    slices: tuple | None = None
    #: (G, N) exact minus Gaussian-model log density where the slopes are zero (the null), and
    #: the slopes' positions in the block; see :func:`_null_gap`.
    null_gap: np.ndarray | None = None
    null_pos: np.ndarray | None = None

    def take(self, genes: slice) -> "NodeTable":
        """The table of a contiguous range of genes (views)."""
        return NodeTable(**{f.name: _gene_part(getattr(self, f.name), f.name, genes) for f in fields(self)})

    @staticmethod
    def concat(tables: list["NodeTable"]) -> "NodeTable":
        """One table from the tables of consecutive gene ranges, in gene order."""
        if len(tables) == 1:
            return tables[0]
        out = {}
        for f in fields(NodeTable):
            values = [getattr(t, f.name) for t in tables]
            if f.name == "null_pos" or values[0] is None:
                out[f.name] = values[0]
            elif isinstance(values[0], tuple):  # slices: (nodes, log weights)
                out[f.name] = tuple(np.concatenate(v) for v in zip(*values))
            else:
                out[f.name] = np.concatenate(values)
        return NodeTable(**out)


def _gene_part(value, name, genes):
    """A NodeTable field's rows for ``genes`` (``null_pos`` is not per gene)."""
    if name == "null_pos" or value is None:
        return value
    return tuple(a[genes] for a in value) if isinstance(value, tuple) else value[genes]


def _log_normal(x, loc, scale):
    z = (x - loc) / scale
    return -0.5 * z * z - np.log(scale) - 0.5 * _LOG2PI


#: Gauss-Hermite nodes of a likelihood slice (:func:`likelihood_slices`).
N_SLICE = 9


def likelihood_slices(prob, theta, cov, k: int, n_nodes: int = N_SLICE):
    """Each gene's log-likelihood along coordinate ``k`` at Gauss-Hermite nodes around its Laplace fit.

    The other coordinates follow their Gaussian conditional mean given the
    node (from the joint fit's covariance ``cov``), which profiles roughly
    over what the coordinate trades off with (a zero-inflation logit against
    the log-dispersion and the intercept); a hurdle's zero logit shares
    nothing with them, and its slice is its exact likelihood.

    Returns
    -------
    nodes, log_weights : numpy.ndarray
        (G, n_nodes): ``log p(y | node) - log q(node) + log w`` with ``q``
        the proposal ``N(theta_k, sd)`` and ``w`` the normalized Gauss-Hermite
        weight, so that ``sum_i exp(log_weights_i) p(node_i)`` approximates the
        gene's marginal likelihood under any prior ``p`` on the coordinate.
    """
    G = theta.shape[0]
    rows = np.arange(G)
    v = cov[:, k, k]
    ok = np.isfinite(v) & (v > 0)
    sd = np.sqrt(np.clip(np.where(ok, v, 1.0), 0.01, 9.0))
    slope = np.where(ok[:, None], cov[:, :, k] / np.where(ok, v, 1.0)[:, None], 0.0)
    x, w = np.polynomial.hermite.hermgauss(n_nodes)
    nodes = theta[:, k, None] + np.sqrt(2.0) * sd[:, None] * x[None, :]
    out = np.empty((G, n_nodes))
    for i in range(n_nodes):
        th = theta + slope * (nodes[:, i] - theta[:, k])[:, None]
        th[:, k] = nodes[:, i]
        out[:, i] = prob.loglik(th, rows) - _log_normal(nodes[:, i], theta[:, k], sd) + np.log(w[i] / np.sqrt(np.pi))
    return nodes, out


def conditional_block(P: int, K: int, n_fixed: int = 1) -> np.ndarray:
    """Coordinates re-fitted at each node: all but the ``n_fixed`` integrated ones from index ``P``."""
    return np.r_[0:P, P + n_fixed : K] if K > P else np.arange(P)


#: A node's last Newton step is taken on trust (its quadratic model gives the node's mode and
#: log density) only where the model promises at most this gain in log density; from a
#: start farther off (an extreme gene one node away) the model can promise thousands of nats
#: and put the gene's whole posterior at an absurd mode, so safeguarded steps come first.
TRUST_GAIN = 2.0
MAX_EXTRA_STEPS = 30


def _node_fit(prob, th, rows, loc, scale, cond, n_steps, normalizer=None):
    """``n_steps`` Newton steps on the block ``cond`` of ``th`` (the rest held), in place.

    Returns the conditional mode, its log posterior from the last step's
    quadratic model (the block's prior included), the block's precision and
    its log-determinant. Genes whose block Hessian is not positive definite
    get NaN there, which marks the node as unusable; their parameters stay
    finite, since the kernels refuse NaN. ``normalizer``: the likelihood's
    eta-free terms at the held gene parameters (:meth:`GeneProblem.normalizer`),
    when every gene parameter is held and nodes share them.
    """
    # Gene parameters entirely outside the block sit at the node: their derivatives are not needed.
    held = tuple(q for q, c in enumerate(prob.cols) if not np.isin(c, cond).any())
    b_loc, b_scale = loc[rows][:, cond], scale[rows][:, cond]

    def newton_step(sel, need_ll):
        ll, g, H = prob.derivs(th[sel], rows[sel], loc, scale, held=held, need_ll=need_ll,
                               normalizer=None if normalizer is None else normalizer[sel])
        A = -H[:, cond[:, None], cond[None, :]]
        L, step = chol_solve(A, g[:, cond])
        step[~np.all(np.isfinite(step), axis=1)] = 0.0
        return ll, g[:, cond], A, L, step

    every = np.arange(th.shape[0])
    for _ in range(n_steps - 1):
        step = newton_step(every, False)[4]
        th[:, cond] += capped(step)
    ll, g, A, L, step = newton_step(every, True)
    for _ in range(MAX_EXTRA_STEPS):
        gain = 0.5 * np.einsum("gk,gk->g", g, step)
        far = np.flatnonzero(np.isfinite(gain) & (gain > TRUST_GAIN))
        if not far.size:
            break
        _safeguarded_step(prob, th, rows, far, cond, capped(step[far]), ll[far], b_loc[far], b_scale[far], loc, scale)
        ll[far], g[far], A[far], L[far], step[far] = newton_step(far, True)
    with np.errstate(invalid="ignore", divide="ignore"):
        logdet = 2.0 * np.sum(np.log(np.einsum("gkk->gk", L)), axis=1)
    f = ll + _log_normal(th[:, cond], b_loc, b_scale).sum(axis=1) + 0.5 * np.einsum("gk,gk->g", g, step)
    return th[:, cond] + step, f, A, logdet


def _safeguarded_step(prob, th, rows, sel, cond, step, ll, b_loc, b_scale, loc, scale):
    """Move ``th[sel]`` along ``step``, halving it until the log posterior of the block rises."""
    f0 = ll + _log_normal(th[sel][:, cond], b_loc, b_scale).sum(axis=1)
    t = np.ones(sel.size)
    todo = np.arange(sel.size)
    for _ in range(30):
        cand = th[sel[todo]].copy()
        cand[:, cond] += t[todo, None] * step[todo]
        f1 = prob.loglik(cand, rows[sel[todo]]) + _log_normal(cand[:, cond], b_loc[todo], b_scale[todo]).sum(axis=1)
        ok = np.isfinite(f1) & (f1 > f0[todo])
        th[sel[todo[ok]]] = cand[ok]
        todo = todo[~ok]
        if not todo.size:
            break
        t[todo] *= 0.5


def _null_gap(prob, th, rows, loc, wscale, cond, s_pos, b, f, A, normalizer=None):
    """Exact minus Gaussian-model log density of the block at its slopes' zero, (G,).

    The closed-form prior swap (:func:`component_slots`) reads every
    component's evidence off the node's Gaussian model of the block (mode
    ``b``, value ``f``, precision ``A``). A narrow component near zero (the
    null) weighs the likelihood where the slopes are zero, several sds from
    the mode for a gene with an apparent effect; there the NB log-likelihood
    in a log mean falls off more slowly than the quadratic (it is linear in
    the tails), so the model understates the null's evidence and the lfsr.
    The other coordinates are re-fitted with the slopes at zero (one Newton
    step from the Gaussian conditional mean) and the difference of the two
    log densities there is returned (0 where the re-fit fails). ``normalizer``:
    the likelihood's eta-free terms at the node (:meth:`GeneProblem.normalizer`).
    """
    r_pos = np.setdiff1d(np.arange(cond.size), s_pos)
    A_rr = A[:, r_pos[:, None], r_pos[None, :]]
    A_rs = A[:, r_pos[:, None], s_pos[None, :]]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x = b.copy()
        # Per gene (NaN where a block is not positive definite, and that gene goes without),
        # so one gene's broken block cannot touch another's answer.
        x[:, r_pos] += chol_solve(A_rr, (A_rs @ b[:, s_pos, None])[..., 0])[1]
        x[:, s_pos] = 0.0
        step = x - b
        model = f - 0.5 * np.einsum("gi,gij,gj->g", step, A, step)
    ok = np.all(np.isfinite(x), axis=1) & np.isfinite(model)
    th0 = th.copy()
    th0[:, cond] = np.where(ok[:, None], x, b)
    _, f_r, _, _ = _node_fit(prob, th0, rows, loc, wscale, cond[r_pos], 1, normalizer)
    exact = f_r + _log_normal(0.0, loc[rows][:, cond[s_pos]], wscale[rows][:, cond[s_pos]]).sum(axis=1)
    gap = exact - model
    return np.where(ok & np.isfinite(gap), gap, 0.0)


def dispersion_nodes(prob, theta, cov, rows, loc, wscale, n_steps: int | None = None,
                     null_coords=None) -> NodeTable:
    """Quadrature nodes around a joint fit ``theta`` (covariance ``cov``) under the weak prior ``wscale``.

    The first gene parameter (the log-dispersion) is integrated over; the
    other coordinates (coefficients, and further gene parameters such as a
    zero-inflation logit) form the conditional block. At each node the block
    starts from its Gaussian conditional mean and takes ``n_steps`` Newton
    steps with the node fixed; the last step's quadratic model gives the
    conditional mode and its log density. By default one step when the block
    is the NB coefficients alone (their log-likelihood is concave and nearly
    quadratic there: at 20,000 x 12 the LFCs and lfsrs move by at most 0.002
    and 0.0007 against two steps), two when it holds a zero-part logit.
    ``null_coords``: the slopes of an LFC prior with components near zero;
    each node then also carries the Gaussian model's error where they are
    zero (:func:`_null_gap`).
    """
    P, K = prob.P, prob.K
    cond = conditional_block(P, K)
    if n_steps is None:
        n_steps = 1 if cond.size == P else 2
    m = cond.size
    G = theta.shape[0]
    bl, bs = loc[rows][:, cond], wscale[rows][:, cond]
    if prob.Q == 0:
        ll, g, H = prob.derivs(theta, rows, loc, wscale)
        prec = -H
        sign, logdet = np.linalg.slogdet(prec)
        base = ll + _log_normal(theta, bl, bs).sum(axis=1) + 0.5 * m * _LOG2PI - 0.5 * logdet
        ok = np.isfinite(base) & (sign > 0)
        return NodeTable(np.zeros((G, 1, 1)), np.where(ok, base, 0.0)[:, None], theta[:, None, :].copy(),
                         prec[:, None], ok, bl, 1.0 / bs**2)
    v_d = np.maximum(cov[:, P, P], 1e-12)
    slope = cov[:, cond, P] / v_d[:, None]
    sd_q = np.sqrt(v_d)
    d = theta[:, P, None] + np.sqrt(2.0) * sd_q[:, None] * _GH_X[None, :]
    base = np.empty((G, N_NODES))
    b = np.empty((G, N_NODES, m))
    prec = np.empty((G, N_NODES, m, m))
    s_pos = None if null_coords is None else np.flatnonzero(np.isin(cond, null_coords))
    gap = None if s_pos is None or not s_pos.size else np.zeros((G, N_NODES))
    if gap is not None:
        # Only genes whose slopes sit 1.5-8 sds from zero: nearer, the Gaussian model is
        # accurate at zero; farther, the null's weight is nil either way.
        sc = np.asarray(null_coords)
        cs = cov[:, sc[:, None], sc[None, :]]
        finite = np.all(np.isfinite(cs), axis=(1, 2))
        cs = np.where(finite[:, None, None], cs, np.eye(sc.size))
        if sc.size == 1:  # one slope (two groups): no stack of pseudo-inverses
            with np.errstate(divide="ignore", invalid="ignore"):
                z2 = np.where(cs[:, 0, 0] != 0.0, theta[:, sc[0]] ** 2 / cs[:, 0, 0], 0.0)
        else:
            z2 = np.einsum("gi,gij,gj->g", theta[:, sc], np.linalg.pinv(cs), theta[:, sc])
        near = np.flatnonzero(finite & np.isfinite(z2) & (z2 > 1.5**2) & (z2 < 8.0**2))
    if n_steps == 1 and prob.fused_newton:
        # The fused NB: the same fits gene by gene in compiled code (_nb_nodes).
        is_slope = np.zeros(P, dtype=bool)
        is_slope[s_pos if gap is not None else []] = True
        near_mask = np.zeros(G, dtype=bool)
        if gap is not None:
            near_mask[near] = True
        every = rows.size == prob.y.shape[0] and bool(np.all(rows == np.arange(rows.size)))
        nb_nodes(prob.y if every else prob.y[rows], prob._Xd, prob._grp, np.ascontiguousarray(prob.offset, dtype=float),
                 prob._lgy if every else prob._lgy[rows],
                 np.ascontiguousarray(theta, dtype=float), np.ascontiguousarray(loc[rows], dtype=float),
                 np.ascontiguousarray(wscale[rows], dtype=float), d, np.ascontiguousarray(slope), sd_q,
                 np.log(_GH_W / np.sqrt(np.pi)), near_mask, is_slope, TRUST_GAIN, MAX_EXTRA_STEPS, MAX_STEP,
                 base, b, prec, np.zeros((G, N_NODES)) if gap is None else gap)
    else:
        _stacked_nodes(prob, theta, rows, loc, wscale, cond, n_steps, d, slope, sd_q, gap,
                       near if gap is not None else None, s_pos, base, b, prec)
    ok = np.all(np.isfinite(base), axis=1) & np.all(np.isfinite(b), axis=(1, 2))
    if not ok.all():
        # A gene whose nodes fail keeps its joint Laplace fit as one node.
        bad = np.flatnonzero(~ok)
        base[bad] = -np.inf
        base[bad, N_NODES // 2] = 0.0
        d[bad] = theta[bad, P, None]
        b[bad] = theta[bad][:, None, cond]
        cov_b = np.where(np.isfinite(cov[bad]), cov[bad], 0.0)[np.ix_(np.arange(bad.size), cond, cond)]
        prec[bad] = np.linalg.inv(cov_b + 1e-9 * np.eye(m))[:, None]
        if gap is not None:
            gap[bad] = 0.0
    return NodeTable(d[:, :, None], base, b, prec, ok, bl, 1.0 / bs**2, null_gap=gap,
                     null_pos=None if gap is None else s_pos)


def _stacked_nodes(prob, theta, rows, loc, wscale, cond, n_steps, d, slope, sd_q, gap, near, s_pos, base, b, prec):
    """:func:`dispersion_nodes`' node fits over the stack of genes with numpy, into base, b, prec and gap."""
    P, m = prob.P, cond.size
    # With every gene parameter held at the node, the null gap's re-fit shares the node's
    # eta-free likelihood terms (for the NB its log-gamma terms, half a kernel pass).
    split = gap is not None and prob.Q and not any(np.isin(c, cond).any() for c in prob.cols)
    for i in range(N_NODES):
        th = theta.copy()
        step_d = d[:, i] - theta[:, P]
        th[:, P] = d[:, i]
        th[:, cond] += slope * step_d[:, None]
        norm = prob.normalizer(th, rows) if split and near.size else None
        b[:, i], f, prec[:, i], logdet = _node_fit(prob, th, rows, loc, wscale, cond, n_steps, norm)
        if gap is not None and near.size:
            gap[near, i] = _null_gap(prob, th[near], rows[near], loc, wscale, cond, s_pos, b[near, i], f[near],
                                     prec[near, i], None if norm is None else norm[near])
        log_q = _log_normal(d[:, i], theta[:, P], sd_q)
        base[:, i] = f + 0.5 * m * _LOG2PI - 0.5 * logdet - log_q + np.log(_GH_W[i] / np.sqrt(np.pi))


def component_slots(table: NodeTable, comp_prec, n_threads: int = 1, means: bool = True):
    """Closed-form swap of the weak slope prior for each component's prior.

    Where the table carries the null's evidence gap (:func:`_null_gap`), a
    component's evidence takes it in proportion to the cube of how far its
    posterior mean moves to the slopes' zero from the node's mode (the
    leading error of a quadratic model is cubic): all of it for the null,
    none for a wide component whose mean stays at the mode.

    Parameters
    ----------
    table : NodeTable
    comp_prec : (C, G, P) each component's coefficient prior precisions (the
        weak prior's on coordinates the component leaves alone, e.g. the
        intercept); the means are the weak prior's.
    n_threads : int
        Gene chunks on this many threads (:mod:`bayescount._threads`).
    means : bool
        Also return every slot's posterior mean (else None;
        :func:`~bayescount.slots.slot_moments` gives those of chosen slots).

    Returns
    -------
    log_ratio : (G, N, C) log evidence under the component minus under the weak prior.
    mean : (G, N, C, P) conditional posterior means (covariances:
        :func:`~bayescount.slots.slot_covariance`), or None.
    """
    G, N, P = table.b.shape
    C = comp_prec.shape[0]
    log_ratio = np.empty((G, N, C))
    mean = np.empty((G, N, C, P)) if means else np.empty((G, 1, 1, P))
    gap = table.null_gap if table.null_gap is not None else np.zeros((G, 0))
    pos = np.asarray(table.null_pos if table.null_gap is not None else [], dtype=np.int64)
    f = np.float64

    kernel = _slots_kernel_2 if P == 2 else _slots_kernel

    def chunk(sl):
        kernel(np.ascontiguousarray(table.prec[sl], f), np.ascontiguousarray(table.b[sl], f),
                      np.ascontiguousarray(table.loc_b[sl], f), np.ascontiguousarray(table.w_prec[sl], f),
                      np.ascontiguousarray(comp_prec[:, sl], f), np.ascontiguousarray(gap[sl], f), pos,
                      log_ratio[sl], mean[sl], means)

    run_chunks(chunk, gene_chunks(G, n_threads, N * C), n_threads)
    return log_ratio, mean if means else None


@numba.njit(cache=True, nogil=True)
def _slots_kernel(prec, b, loc_b, w_prec, comp_prec, gap, pos, log_ratio, mean, store_mean):  # pragma: no cover
    # One pass over (gene, node, component) with P x P Cholesky by hand: the blocks are
    # 2 x 2 to ~6 x 6, where whole-stack numpy temporaries cost more than the arithmetic.
    # A block that is not positive definite gives NaN (sqrt of a negative), as before.
    G, N, P = b.shape
    C = comp_prec.shape[0]
    with_gap = gap.shape[1] > 0
    L = np.empty((P, P))
    L0 = np.empty((P, P))
    Q = np.empty((P, P))
    r0 = np.empty(P)
    r = np.empty(P)
    y = np.empty(P)
    m = np.empty(P)
    const = np.empty(C)
    for g in range(G):
        for c in range(C):
            acc = 0.0
            for a in range(P):
                delta = comp_prec[c, g, a] - w_prec[g, a]
                acc += 0.5 * np.log(comp_prec[c, g, a] / w_prec[g, a]) - 0.5 * delta * loc_b[g, a] ** 2
            const[c] = acc
        for n in range(N):
            quad0 = 0.0
            for a in range(P):
                acc = 0.0
                for k in range(P):
                    acc += prec[g, n, a, k] * b[g, n, k]
                r0[a] = acc
                quad0 += b[g, n, a] * acc
            logdet0 = chol_into(prec[g, n], L0)
            bb = 0.0
            for s in range(pos.size):
                bb += b[g, n, pos[s]] * b[g, n, pos[s]]
            for c in range(C):
                for a in range(P):
                    for k in range(P):
                        Q[a, k] = prec[g, n, a, k]
                    delta = comp_prec[c, g, a] - w_prec[g, a]
                    Q[a, a] += delta
                    r[a] = r0[a] + delta * loc_b[g, a]
                logdet = chol_into(Q, L)
                yy = 0.0
                for a in range(P):
                    acc = r[a]
                    for k in range(a):
                        acc -= L[a, k] * y[k]
                    y[a] = acc / L[a, a]
                    yy += y[a] * y[a]
                lr = const[c] - 0.5 * logdet + 0.5 * logdet0 + 0.5 * yy - 0.5 * quad0
                for a in range(P - 1, -1, -1):
                    acc = y[a]
                    for k in range(a + 1, P):
                        acc -= L[k, a] * m[k]
                    m[a] = acc / L[a, a]
                if with_gap:
                    toward = 0.0
                    for s in range(pos.size):
                        toward += (m[pos[s]] - b[g, n, pos[s]]) * -b[g, n, pos[s]]
                    t = min(max(toward / max(bb, 1e-300), 0.0), 1.0)
                    lr += gap[g, n] * t * t * t
                log_ratio[g, n, c] = lr
                if store_mean:
                    for a in range(P):
                        mean[g, n, c, a] = m[a]


@numba.njit(cache=True, nogil=True)
def _slots_kernel_2(prec, b, loc_b, w_prec, comp_prec, gap, pos, log_ratio, mean, store_mean):  # pragma: no cover
    # :func:`_slots_kernel` for 2 x 2 blocks (intercept and one LFC, the common design) in
    # closed form: determinant and adjugate instead of a Cholesky factor, one log per slot
    # instead of two and no square roots (the swap's largest cost at 20,000 genes).
    G, N, _ = b.shape
    C = comp_prec.shape[0]
    with_gap = gap.shape[1] > 0
    const = np.empty(C)
    for g in range(G):
        for c in range(C):
            acc = 0.0
            for a in range(2):
                delta = comp_prec[c, g, a] - w_prec[g, a]
                acc += 0.5 * np.log(comp_prec[c, g, a] / w_prec[g, a]) - 0.5 * delta * loc_b[g, a] ** 2
            const[c] = acc
        l0, l1 = loc_b[g, 0], loc_b[g, 1]
        for n in range(N):
            p00, p01, p10, p11 = prec[g, n, 0, 0], prec[g, n, 0, 1], prec[g, n, 1, 0], prec[g, n, 1, 1]
            b0, b1 = b[g, n, 0], b[g, n, 1]
            r00 = p00 * b0 + p01 * b1
            r01 = p10 * b0 + p11 * b1
            quad0 = b0 * r00 + b1 * r01
            det0 = p00 * p11 - p10 * p10
            logdet0 = np.log(det0) if p00 > 0.0 and det0 > 0.0 else np.nan
            bb = 0.0
            for s in range(pos.size):
                bb += b[g, n, pos[s]] * b[g, n, pos[s]]
            for c in range(C):
                d0 = comp_prec[c, g, 0] - w_prec[g, 0]
                d1 = comp_prec[c, g, 1] - w_prec[g, 1]
                q00, q11 = p00 + d0, p11 + d1
                det = q00 * q11 - p10 * p10
                r0, r1 = r00 + d0 * l0, r01 + d1 * l1
                if q00 > 0.0 and det > 0.0:
                    m0 = (q11 * r0 - p10 * r1) / det
                    m1 = (q00 * r1 - p10 * r0) / det
                    lr = const[c] - 0.5 * np.log(det) + 0.5 * logdet0 + 0.5 * (r0 * m0 + r1 * m1) - 0.5 * quad0
                else:  # not positive definite
                    m0, m1, lr = np.nan, np.nan, np.nan
                if with_gap:
                    toward = 0.0
                    for s in range(pos.size):
                        k = pos[s]
                        toward += ((m0 if k == 0 else m1) - b[g, n, k]) * -b[g, n, k]
                    t = min(max(toward / max(bb, 1e-300), 0.0), 1.0)
                    lr += gap[g, n] * t * t * t
                log_ratio[g, n, c] = lr
                if store_mean:
                    mean[g, n, c, 0] = m0
                    mean[g, n, c, 1] = m1


def node_prior(table: NodeTable, loc_d, scale_d) -> np.ndarray:
    """``log p(d_i)`` under the integrated coordinates' prior (``loc_d``, ``scale_d``: (G, T)), (G, N)."""
    if loc_d is None:
        return np.zeros_like(table.base)
    return _log_normal(table.d, loc_d[:, None, :], scale_d[:, None, :]).sum(axis=2)


def _product_rule(sizes):
    """Gauss-Hermite nodes (N, T) and log weights (N,) for a standard normal, ``sizes[t]`` nodes per dimension."""
    rules = [np.polynomial.hermite.hermgauss(n) for n in sizes]
    grids = np.meshgrid(*[np.sqrt(2.0) * x for x, _ in rules], indexing="ij")
    logw = sum(np.meshgrid(*[np.log(w / np.sqrt(np.pi)) for _, w in rules], indexing="ij"))
    return np.stack([g.ravel() for g in grids], axis=1), np.ravel(logw)


def _node_counts(n_scales: int, n_fixed: int) -> list[int]:
    """Nodes per dimension: 7 for a lone scale, 5 per scale with one more dimension, 3 beyond;
    the log-dispersion, usually far better determined than a scale, takes 3."""
    per_scale = {1: 7 if not n_fixed else 5, 2: 5 if not n_fixed else 3}.get(n_scales, 3)
    return [per_scale] * n_scales + [3] * n_fixed


def scale_nodes(prob, theta, loc, wscale, re_cols, term_of, q_mean, q_sd, cond, fixed=()) -> NodeTable:
    """Quadrature over each gene's random-effect log scales (and its log-dispersion), Laplace for the rest.

    The first dimensions of the proposal ``N(q_mean,
    q_sd)`` ((G, D) each) are the random-effect terms' log sds; ``fixed``
    lists ``(dimension, theta coordinate)`` pairs for further integrated
    coordinates inside ``theta`` (the log-dispersion). At every node of a
    product Gauss-Hermite grid the group-level effects get prior sd
    ``exp(node)``, the fixed coordinates take the node's value, and the
    conditional block ``cond`` (coefficients, effects, other gene
    parameters) takes Newton steps from the nearest node already fitted;
    the Laplace evidence of the node divided by the proposal density is its
    log weight. This is the Laplace-approximate marginal likelihood of the
    scales that glmmTMB maximizes, integrated instead of maximized; with the
    dispersion integrated too, the effects no longer soak up the counts'
    own noise when groups are small (paired designs), which a joint fit of
    dispersion and effects does (the Neyman-Scott bias).
    """
    G, K = theta.shape
    D = q_mean.shape[1]
    m = cond.size
    X, logw = _product_rule(_node_counts(D - len(fixed), len(fixed)))
    N = X.shape[0]
    d = q_mean[:, None, :] + q_sd[:, None, :] * X[None]
    rows = np.arange(G)
    base = np.empty((G, N))
    b = np.empty((G, N, m))
    prec = np.empty((G, N, m, m))
    n_re = D - len(fixed)
    order = np.argsort(np.abs(X).sum(axis=1), kind="stable")
    # With every gene parameter at a node value, nodes that share those values share the
    # likelihood's eta-free terms (for the NB its log-gamma terms, most of a kernel's cost).
    shared = not any(np.isin(c, cond).any() for c in prob.cols)
    normalizers: dict = {}
    for n, i in enumerate(order):
        # Start from the nearest node already fitted (the joint fit for the first).
        th = theta.copy()
        if n:
            th[:, cond] = b[:, order[np.argmin(np.abs(X[order[:n]] - X[i]).sum(axis=1))]]
        for dim, k in fixed:
            th[:, k] = d[:, i, dim]
        sc = wscale.copy()
        sc[:, re_cols] = np.exp(d[:, i, :n_re][:, term_of])
        norm = None
        if shared and prob.Q:
            key = tuple(X[i, n_re:])
            if key not in normalizers:
                normalizers[key] = prob.normalizer(th, rows)
            norm = normalizers[key]
        # The integrated coordinates' own priors enter through node_prior, not f.
        b[:, i], f, prec[:, i], logdet = _node_fit(prob, th, rows, loc, sc, cond, NODE_STEPS, norm)
        log_q = _log_normal(d[:, i], q_mean, q_sd).sum(axis=1)
        base[:, i] = f + 0.5 * m * _LOG2PI - 0.5 * logdet - log_q + logw[i]
    bad = ~np.isfinite(base) | ~np.all(np.isfinite(prec), axis=(2, 3))
    base[bad] = -np.inf
    prec[bad] = np.eye(m)
    ok = ~bad.all(axis=1)
    # A gene with no usable node keeps the centre one (and is flagged through ``ok``).
    base[~ok, int(np.argmin(np.abs(X).sum(axis=1)))] = 0.0
    return NodeTable(d, base, b, prec, ok, loc[:, cond].copy(), 1.0 / wscale[:, cond] ** 2)


def scale_posterior(table: NodeTable, loc_d, scale_d):
    """Per-gene posterior mean and sd of the integrated log scales from a node table, (G, T) each."""
    lw = table.base + node_prior(table, loc_d, scale_d)
    w = np.exp(lw - lw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    mean = np.einsum("gn,gnt->gt", w, table.d)
    var = np.einsum("gn,gnt->gt", w, (table.d - mean[:, None]) ** 2)
    return mean, np.sqrt(var)

