"""Posterior summaries of normal mixtures (the MAP path's answers) against brute force."""

import numpy as np
from scipy import stats

from bayescount.stats import mixture_summary


def _brute_hdi(w, m, s, prob, n=400_001):
    # Highest-density set on a very fine grid; its hull.
    x = np.linspace((m - 9 * s).min(), (m + 9 * s).max(), n)
    dens = np.sum(w[:, None] * stats.norm.pdf(x[None, :], m[:, None], s[:, None]), axis=0)
    mass = dens / dens.sum()
    order = np.argsort(-mass)
    k = np.searchsorted(np.cumsum(mass[order]), prob)
    inside = order[: k + 1]
    return x[inside].min(), x[inside].max()


def test_mixture_hdi_matches_a_fine_grid():
    rng = np.random.default_rng(0)
    cases = [
        # one normal: the HDI is mean +- z sd
        (np.array([1.0]), np.array([0.3]), np.array([0.5])),
        # a broad slab and a narrow spike-like component at 0 (a shrunk gene)
        (np.array([0.6, 0.4]), np.array([0.0, 0.8]), np.array([0.02, 0.6])),
        # a spike two and three cells wide (Simpson's rule on its cells)
        (np.array([0.7, 0.3]), np.array([0.05, 0.9]), np.array([0.07, 0.6])),
        (np.array([0.3, 0.7]), np.array([0.05, 0.9]), np.array([0.1, 0.6])),
        # two separated modes: the hull of the set
        (np.array([0.5, 0.5]), np.array([-2.0, 2.0]), np.array([0.4, 0.4])),
        # skewed by a wide minor component
        (np.array([0.8, 0.2]), np.array([1.0, 2.5]), np.array([0.3, 1.5])),
    ]
    for _ in range(6):
        k = 3
        cases.append((rng.dirichlet(np.ones(k)), rng.normal(0, 1.5, k), np.exp(rng.normal(-0.5, 0.7, k))))
    for prob in (0.8, 0.95):
        for w, m, s in cases:
            pad = 3 - w.size  # one table: components with zero weight fill the rows
            W = np.concatenate([w, np.zeros(pad)])[None]
            M = np.concatenate([m, np.zeros(pad)])[None]
            S = np.concatenate([s, np.ones(pad)])[None]
            mean, sd, lfsr, lo, hi = mixture_summary(W, M, S, prob)
            want_lo, want_hi = _brute_hdi(w, m, s, prob)
            cell = ((m + 7 * s).max() - (m - 7 * s).min()) / 256
            assert abs(lo[0] - want_lo) <= 1.5 * cell and abs(hi[0] - want_hi) <= 1.5 * cell, (w, m, s, prob)
            np.testing.assert_allclose(mean[0], np.sum(w * m), rtol=1e-12)
            np.testing.assert_allclose(sd[0] ** 2, np.sum(w * (s**2 + m**2)) - np.sum(w * m) ** 2, rtol=1e-10)
            p_pos = np.sum(w * stats.norm.sf(0, m, s))
            np.testing.assert_allclose(lfsr[0], min(p_pos, 1 - p_pos), rtol=1e-10, atol=1e-14)
    # One normal, exactly: the interval is mean +- z sd to within a cell.
    _, _, _, lo, hi = mixture_summary(np.ones((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), 0.95)
    np.testing.assert_allclose([lo[0], hi[0]], [-1.96, 1.96], atol=14 / 256)


def test_a_genes_hdi_depends_on_its_own_mixture_only():
    """Columns of weight 0 (padding, other genes' component labels) leave a gene's interval alone.

    A spike with a slab and a far, light component: below a share of the mass a component is
    left out of the histogram (it would stretch the cells); counted over the table's columns
    rather than the gene's own components, that share moved with the width of the table, and
    the far component (weight 0.001) came in and coarsened the cells.
    """
    w = np.array([0.9, 0.05, 0.03, 0.019, 0.001])
    m = np.array([0.0, -0.4, -0.38, -0.42, 3.0])
    s = np.array([0.03, 0.3, 0.25, 0.35, 1.0])
    narrow = mixture_summary(w[None], m[None], s[None], 0.95)
    for pad in (3, 20, 60):
        W = np.concatenate([w, np.zeros(pad)])[None]
        M = np.concatenate([m, np.linspace(-5, 5, pad)])[None]
        S = np.concatenate([s, np.full(pad, 2.0)])[None]
        wide = mixture_summary(W, M, S, 0.95)
        np.testing.assert_array_equal([wide[3][0], wide[4][0]], [narrow[3][0], narrow[4][0]])
    want_lo, want_hi = _brute_hdi(w, m, s, 0.95)
    cell = ((m[:4] + 7 * s[:4]).max() - (m[:4] - 7 * s[:4]).min()) / 256
    assert abs(narrow[3][0] - want_lo) <= 1.5 * cell and abs(narrow[4][0] - want_hi) <= 1.5 * cell


def test_level_of_takes_the_cells_in_sorted_order():
    """The run-growing level search gives the level a sort of the cells gives, maxima and ties included."""
    from bayescount.stats import _MAX_PEAKS, _level_of

    rng = np.random.default_rng(3)
    x = np.arange(256)
    work = (np.empty(_MAX_PEAKS, np.int64), np.empty(_MAX_PEAKS, np.int64), np.empty(_MAX_PEAKS, np.int64),
            np.empty(256, bool))
    for t in range(3000):
        kind = t % 4
        if kind == 0:  # noise: more maxima than the runs hold (the sort fallback)
            mass = rng.random(256)
        elif kind == 1:  # plateaus and ties
            mass = np.round(rng.random(256) * 4)
        else:  # a few bumps, with holes of exact zeros
            mass = sum(rng.random() * np.exp(-0.5 * ((x - rng.uniform(0, 256)) / rng.uniform(0.3, 40)) ** 2)
                       for _ in range(rng.integers(1, 6)))
            if kind == 3:
                mass[rng.integers(0, 256, 20)] = 0.0
        need = rng.uniform(0.3, 0.999) * mass.sum()
        ranked = np.sort(mass)[::-1]
        want = ranked[np.searchsorted(np.cumsum(ranked), need)]
        got = _level_of(mass, need, *work)
        # Equal, or a level whose summation order alone decided (the sums agree to rounding).
        assert got == want or abs(mass[mass >= got].sum() - need) < 1e-9 * mass.sum(), (t, got, want)


def test_mixture_hdi_of_a_broken_gene_is_nan_not_garbage():
    w = np.array([[0.5, 0.5], [1.0, 0.0]])
    mean = np.array([[0.0, np.nan], [0.0, 0.0]])
    sd = np.array([[1.0, 1.0], [1.0, 1.0]])
    _, _, _, lo, hi = mixture_summary(w, mean, sd, 0.9)
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    np.testing.assert_allclose([lo[1], hi[1]], [-1.645, 1.645], atol=14 / 256)


def test_table_logsumexps_match_scipy():
    """The compiled sums over nodes and over components equal scipy's logsumexp, -inf rows included."""
    from scipy.special import logsumexp as sp_lse

    from bayescount.stats import logsumexp_components, logsumexp_nodes

    rng = np.random.default_rng(5)
    base, lr = rng.normal(0, 30, (50, 7)), rng.normal(0, 30, (50, 7, 11))
    lr[3] = -np.inf  # a gene with no usable node
    lr[4, :, 2] = -np.inf  # a component never evaluated
    log_pi = np.log(rng.dirichlet(np.ones(11)))
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(logsumexp_nodes(base, lr), sp_lse(base[:, :, None] + lr, axis=1), rtol=1e-13)
        np.testing.assert_allclose(logsumexp_components(log_pi, lr), sp_lse(log_pi + lr, axis=2), rtol=1e-13)
    assert np.all(logsumexp_nodes(base, lr)[3] == -np.inf) and logsumexp_nodes(base, lr)[4, 2] == -np.inf
