"""The posterior's slots: each gene's heaviest (dispersion node, LFC-prior component) pairs and their moments.

Of a gene's N x C pairs, whose closed-form weights
:func:`bayescount.quadrature.component_slots` gives, the MAP path keeps the
heaviest ones holding all but ``SLOT_MASS_TOL`` of its posterior
(:func:`select_slots`) and forms their Gaussian moments
(:func:`slot_moments`); the answers (LFC tables, draws) read those.
"""

from __future__ import annotations

import numba
import numpy as np

from ._linalg import chol_into, inverse_from_chol
from .quadrature import NodeTable


def select_slots(base, log_pi, log_ratio, mass: float, cap: int):
    """Each gene's heaviest (node, component) slots holding ``mass`` of its posterior.

    The log weight of slot ``(n, c)`` is ``base[g, n] + log_pi[c] +
    log_ratio[g, n, c]``. Slots are taken heaviest first until they hold
    ``mass`` of the gene's total (at most ``cap`` of them).

    Returns
    -------
    top : (G, S) int
        Flat slot indices ``n * C + c``, heaviest first; past a gene's own
        count (``need``) the heaviest is repeated.
    weights : (G, S)
        Normalized weights of the taken slots (0 past ``need``); NaN for a
        gene with no finite weight.
    need : (G,) int
        Slots each gene takes; ``S = need.max()``.
    log_evidence : (G,)
        ``logsumexp`` of all slots' log weights.

    One compiled pass a gene with its row in cache: no (G, N*C) tables of
    log weights, weights, sort orders and gathers (at 20,000 x 12 these took a
    third of the posterior step, and the step is bound by memory, not by the cores).
    """
    G, N, C = log_ratio.shape
    cap = max(1, min(int(cap), N * C))
    top = np.empty((G, cap), dtype=np.int64)
    kept = np.empty((G, cap))
    need = np.empty(G, dtype=np.int64)
    log_evidence = np.empty(G)
    log_pi = np.ascontiguousarray(np.broadcast_to(log_pi, (C,)), dtype=float)
    _select_slots(np.ascontiguousarray(base, dtype=float), log_pi,
                  np.ascontiguousarray(log_ratio, dtype=float), float(mass), top, kept, need, log_evidence)
    S = int(need.max()) if G else 1
    past = np.arange(S)[None, :] >= need[:, None]
    top = np.where(past, top[:, :1], top[:, :S])
    weights = np.where(past, 0.0, kept[:, :S])
    return top, weights / weights.sum(axis=1, keepdims=True), need, log_evidence


@numba.njit(cache=True, nogil=True)
def _select_slots(base, log_pi, log_ratio, mass, top, kept, need, log_evidence):  # pragma: no cover - compiled
    G, N, C = log_ratio.shape
    M = N * C
    cap = top.shape[1]
    row = np.empty(M)
    cand = np.empty(M, dtype=np.int64)
    # Slots lighter than this hold together less than half of 1 - mass: never taken.
    floor = 0.5 * (1.0 - mass) / M
    for g in range(G):
        top_w, bad = -np.inf, False
        for n in range(N):
            for c in range(C):
                v = base[g, n] + log_pi[c] + log_ratio[g, n, c]
                row[n * C + c] = v
                if v != v:
                    bad = True
                elif v > top_w:
                    top_w = v
        if bad or not np.isfinite(top_w):
            log_evidence[g] = np.nan if bad else -np.inf
            need[g] = 1
            top[g, 0] = 0
            kept[g, 0] = np.nan
            continue
        total = 0.0
        for i in range(M):
            # Most slots sit far below the heaviest (63% under e^-50 at 20,000 x 12); together
            # they hold under 1e-19 of the total, below its rounding, and skip the exp.
            x = row[i] - top_w
            e = np.exp(x) if x > -50.0 else 0.0
            row[i] = e
            total += e
        log_evidence[g] = np.log(total) + top_w
        n_cand = 0
        light = floor * total
        for i in range(M):
            if row[i] >= light:
                cand[n_cand] = i
                n_cand += 1
        # Heaviest first by selection (ties: lower index first): a gene takes a few slots of
        # the tens of candidates, so this beats sorting them.
        acc, k = 0.0, 0
        while k < n_cand and k < cap:
            best = k
            for j in range(k + 1, n_cand):
                if row[cand[j]] > row[cand[best]] or (row[cand[j]] == row[cand[best]] and cand[j] < cand[best]):
                    best = j
            i = cand[best]
            cand[best] = cand[k]
            cand[k] = i
            w = row[i] / total
            acc += w
            top[g, k] = i
            kept[g, k] = w
            k += 1
            if not acc < mass:
                break
        need[g] = k


def slot_moments(table: NodeTable, comp_prec, node_of, comp_of, modes, covs, cond, need=None) -> None:
    """Posterior means and covariances of chosen (node, component) slots, written in place.

    Slot ``s`` of gene ``g`` (node ``node_of[g, s]``, component ``comp_of[g, s]``)
    has precision ``prec + diag(comp_prec - w_prec)`` and mean
    ``cov (prec b + (comp_prec - w_prec) loc_b)``; they go to
    ``modes[g, s, cond]`` and ``covs[g, s, cond, cond]`` (NaN where the
    precision is not positive definite). One compiled pass per gene: no
    (G, S, P, P) gathers or fancy-index writes (at 20,000 x 12 these took
    three times the arithmetic). With ``need`` ((G,) int), a gene's slots from
    ``need[g]`` on repeat its first (as :func:`select_slots` pads them) and
    take its moments without recomputing them.
    """
    _slot_moments_kernel(table.prec, table.b, table.loc_b, table.w_prec, np.ascontiguousarray(comp_prec),
                         np.ascontiguousarray(node_of), np.ascontiguousarray(comp_of),
                         np.asarray(cond, dtype=np.int64), modes, covs,
                         np.full(node_of.shape[0], node_of.shape[1], dtype=np.int64) if need is None
                         else np.ascontiguousarray(need, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _slot_moments_kernel(prec, b, loc_b, w_prec, comp_prec, node_of, comp_of, cond, modes, covs,
                         need):  # pragma: no cover - compiled
    G, S = node_of.shape
    P = prec.shape[-1]
    Q = np.empty((P, P))
    L = np.zeros((P, P))
    Li = np.zeros((P, P))
    cov = np.empty((P, P))
    r = np.empty(P)
    for g in range(G):
        for s in range(S):
            if s >= need[g] and s > 0:
                for i in range(P):
                    modes[g, s, cond[i]] = modes[g, 0, cond[i]]
                    for k in range(P):
                        covs[g, s, cond[i], cond[k]] = covs[g, 0, cond[i], cond[k]]
                continue
            n, c = node_of[g, s], comp_of[g, s]
            for i in range(P):
                delta = comp_prec[c, g, i] - w_prec[g, i]
                acc = delta * loc_b[g, i]
                for k in range(P):
                    Q[i, k] = prec[g, n, i, k]
                    acc += prec[g, n, i, k] * b[g, n, k]
                Q[i, i] += delta
                r[i] = acc
            chol_into(Q, L)
            inverse_from_chol(L, Li, cov)
            for i in range(P):
                acc = 0.0
                for k in range(P):
                    acc += cov[i, k] * r[k]
                    covs[g, s, cond[i], cond[k]] = cov[i, k]
                modes[g, s, cond[i]] = acc


def slot_covariance(table: NodeTable, comp_prec, node_of, comp_of):
    """Posterior covariances of chosen (node, component) slots: (G, S, P, P) (see :func:`slot_moments`)."""
    G, S = node_of.shape
    P = table.b.shape[-1]
    covs = np.zeros((G, S, P, P))
    slot_moments(table, comp_prec, node_of, comp_of, np.zeros((G, S, P)), covs, np.arange(P))
    return covs
