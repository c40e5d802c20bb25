"""The fused NB kernels equal the pytensor-derived ones (the reference) in every regime."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayescount import _nb_kernels as nk
from bayescount.newton import likelihood_kernel
from bayescount.parts import NegativeBinomial


def _grid():
    # Rows: a log-dispersion each, from near-Poisson (r = e^20) to heavy (r = e^-4);
    # columns: counts from 0 to 10^6 against means from e^-12 to e^14, so every branch of
    # log_rising (short product, Stirling in r, lgamma) and of softplus is met.
    rng = np.random.default_rng(3)
    d = np.array([-20.0, -12.0, -9.5, -5.0, -2.0, -0.5, 0.0, 1.0, 4.0])
    n = 400
    y = np.concatenate([np.zeros(60), rng.integers(1, 17, 140), rng.integers(17, 300, 100),
                        rng.integers(300, 10**6, 100)]).astype(float)
    eta = np.log(np.maximum(y, 0.5)) + rng.normal(0, 1.5, n)
    eta[:20] = rng.uniform(-12, 14, 20)
    G = d.size
    return np.tile(y, (G, 1)), np.tile(eta, (G, 1)), d


def _close(a, b, rtol=1e-11, terms=None):
    # Relative to the size of the terms that cancel in a derivative (y against mu, r log1p(a mu)
    # against r digamma_rising): both implementations lose digits there alike.
    scale = np.maximum(np.abs(b), 1.0) + (0.0 if terms is None else terms)
    np.testing.assert_array_less(np.abs(a - b) / scale, rtol)


def _ll_terms(y, eta, d):
    s = d[:, None] + eta
    return (y * (np.abs(s) + np.log1p(y) + 1.0) + np.exp(-d)[:, None] * np.logaddexp(0.0, s)).sum(axis=1)


def _terms(y, eta, d):
    s = d[:, None] + eta
    return y + np.exp(-d)[:, None] * np.logaddexp(0.0, s) + np.exp(np.minimum(eta, 700.0))


@pytest.fixture(scope="module")
def grid():
    y, eta, d = _grid()
    return y, eta, d, np.ascontiguousarray(np.broadcast_to(d[:, None], y.shape)), np.arange(d.size)


def test_the_full_log_density_equals_scipy(grid):
    y, eta, d, _, rows = grid
    ref = stats.nbinom.logpmf(y, np.exp(-d)[:, None], 1.0 / (1.0 + np.exp(d[:, None] + eta))).sum(axis=1)
    got = nk.nb_value(y, rows, eta, d, nk.lgamma_rows(y))
    _close(got, ref, 1e-12, terms=_ll_terms(y, eta, d))


def test_eta_kernels_equal_the_pytensor_kernels(grid):
    y, eta, d, D, rows = grid
    lik = NegativeBinomial()
    lgy = nk.lgamma_rows(y)
    for mode, kind in ((0, False), (1, True), (2, "split")):
        ref = likelihood_kernel(lik, (0,), kind)[0](y, eta, D)
        n = y.shape[1]
        ll, d1, d2 = nk.nb_eta(y, rows, eta, d, mode, lgy, np.arange(n), n)
        _close(d1, ref[-2], terms=_terms(y, eta, d))
        _close(d2, ref[-1], terms=_terms(y, eta, d))
        if mode:
            _close(ll, ref[0].sum(axis=1), terms=_ll_terms(y, eta, d))
        else:
            assert not ll.any()


def test_joint_kernel_equals_the_pytensor_kernel(grid):
    y, eta, d, D, rows = grid
    ref = likelihood_kernel(NegativeBinomial(), None, True)[0](y, eta, D)
    n = y.shape[1]
    got = nk.nb_both(y, rows, eta, d, True, nk.lgamma_rows(y), np.arange(n), n)
    _close(got[0], ref[0].sum(axis=1), terms=_ll_terms(y, eta, d))
    terms = _terms(y, eta, d)
    for a, b in zip(got[1:], ref[1:]):
        if a.ndim == 1:
            # The log-dispersion's derivatives come summed over the observations.
            _close(a, b.sum(axis=1), terms=terms.sum(axis=1))
        else:
            _close(a, b, terms=terms)


def test_derivatives_sum_over_the_design_rows(grid):
    y, eta, d, _, rows = grid
    n = y.shape[1]
    grp = np.arange(n) % 3
    lgy = nk.lgamma_rows(y)
    every = nk.nb_both(y, rows, eta, d, True, lgy, np.arange(n), n)
    grouped = nk.nb_both(y, rows, eta, d, True, lgy, grp, 3)
    for a, b in zip(grouped, every):
        want = b if b.ndim == 1 else np.stack([b[:, grp == k].sum(axis=1) for k in range(3)], axis=1)
        np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-9 * np.abs(b).max())
    for mode in (0, 1, 2):
        a, b = nk.nb_eta(y, rows, eta, d, mode, lgy, grp, 3), nk.nb_eta(y, rows, eta, d, mode, lgy, np.arange(n), n)
        np.testing.assert_array_equal(a[0], b[0])
        for k in range(3):
            np.testing.assert_allclose(a[1][:, k], b[1][:, grp == k].sum(axis=1), rtol=1e-12, atol=1e-6)


def test_normalizer_and_rows(grid):
    y, eta, d, D, _ = grid
    rows = np.array([4, 0, 4, 8])
    lgy = nk.lgamma_rows(y)
    grp = np.zeros(y.shape[1], dtype=np.int64)
    ll_split = nk.nb_eta(y, rows, eta[rows], d[rows], 2, lgy, grp, 1)[0]
    ll_full = nk.nb_eta(y, rows, eta[rows], d[rows], 1, lgy, grp, 1)[0]
    _close(ll_split + nk.nb_normalizer(y, rows, d[rows], lgy), ll_full, terms=_ll_terms(y, eta, d)[rows])
    # The value kernel (Newton's line search) and the derivative kernels agree to the last bit.
    np.testing.assert_array_equal(ll_full, nk.nb_value(y, np.arange(d.size), eta, d, lgy)[rows])
    np.testing.assert_array_equal(ll_full, nk.nb_both(y, rows, eta[rows], d[rows], True, lgy, grp, 1)[0])


def test_no_overflow_at_extreme_means():
    y = np.array([[0.0, 5.0, 1e6]])
    eta = np.array([[800.0, -800.0, 30.0]])
    ll, d1, d2 = nk.nb_eta(y, np.array([0]), eta, np.array([0.5]), 1, nk.lgamma_rows(y), np.arange(3), 3)
    assert np.all(np.isfinite(d1)) and np.all(np.isfinite(d2))


@pytest.mark.parametrize("model, donor", [("nb_trend", False), ("nb_donor", True)])
def test_whole_fits_equal_the_pytensor_kernels(monkeypatch, model, donor):
    """A MAP fit on the fused kernels gives the table the pytensor-derived kernels give."""
    import bayescount as bc
    from bayescount import newton

    if donor:
        sim = bc.simulate_cells(n_genes=30, n_donors_per_group=3, cells_per_donor=40, donor_sd=0.3,
                                frac_de=0.3, random_seed=5)
        data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
        contrast = ["condition", "B", "A"]
    else:
        data = bc.simulate(n_genes=300, n_per_group=4, frac_de=0.3, random_seed=5).data
        contrast = ["group", "B", "A"]
    tables = {}
    for fused in (True, False):
        monkeypatch.setattr(newton, "FUSED_NB", fused)
        res = bc.fit(data, model=model, method="map", random_seed=1, n_threads=1)
        tables[fused] = res.lfc(contrast)
    a, b = tables[True], tables[False]
    for col in ("log2fc", "log2fc_sd", "lfsr", "pvalue"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-6, atol=1e-8, err_msg=col)


@pytest.mark.parametrize("donor", [False, True])
def test_compiled_newton_takes_the_stacked_newtons_steps(monkeypatch, donor):
    """The per-gene compiled Newton (``_nb_newton``) makes the stacked loop's iterates and outputs.

    Same iteration counts, modes, convergence flags, Hessians and log-likelihoods
    at the modes, from a start far off (the line search halves) and with
    genes of zeros in one group, of huge counts and of one count.
    """
    import bayescount as bc
    from bayescount import newton
    from bayescount.fit_map import _initial_theta
    from bayescount.model import layout
    from bayescount.spec import load_spec

    if donor:
        sim = bc.simulate_cells(n_genes=20, n_donors_per_group=3, cells_per_donor=40, donor_sd=0.3,
                                frac_de=0.3, random_seed=5)
        data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
        spec = load_spec("nb_donor")
    else:
        counts = bc.simulate(n_genes=200, n_per_group=4, frac_de=0.3, random_seed=5).counts
        counts.iloc[0] = [0] * 4 + [500, 800, 300, 1000]
        counts.iloc[1] = 10**7
        counts.iloc[2] = [0] * 7 + [1]
        samples = pd.DataFrame({"group": ["A"] * 4 + ["B"] * 4}, index=counts.columns)
        data = bc.CountData.from_pandas(counts, samples, "~ group")
        spec = load_spec("nb_trend")
    lay = layout(spec, data)
    prob = newton.GeneProblem(spec, data, lay)
    assert prob.fused_newton
    G, K = data.n_genes, prob.K
    rng = np.random.default_rng(2)
    loc = np.zeros((G, K))
    loc[:, -1] = np.log(0.1)
    scale = np.full((G, K), 10.0)
    scale[:, -1] = 1.0
    start = _initial_theta(data, lay, loc) + rng.normal(0, 2.0, (G, K))  # far: the line search halves
    rows = np.arange(0, G, 2)
    out = {}
    for compiled in (True, False):
        monkeypatch.setattr(newton, "FUSED_NEWTON", compiled)
        out[compiled] = newton.newton(prob, start.copy(), loc, scale, rows=rows, curvature=True)
    (ta, ca, na, Ha, la), (tb, cb, nb, Hb, lb) = out[True], out[False]
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_array_equal(ca, cb)
    assert na[rows].max() > 3 and (na[1::2] == 0).all()
    np.testing.assert_allclose(ta, tb, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(Ha, Hb, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(la, lb, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("design", ["~ group", "~ batch + group"])
def test_compiled_node_fits_equal_the_stacked_ones(monkeypatch, design):
    """``dispersion_nodes`` gene by gene in compiled code (``_nb_nodes``) gives the stacked table.

    From a joint fit whose coefficients are pushed off (so the safeguarded steps of
    TRUST_GAIN run), with the null's evidence gap for one slope and for two.
    """
    import bayescount as bc
    from bayescount import newton
    from bayescount.fit_map import _initial_theta
    from bayescount.model import layout
    from bayescount.quadrature import dispersion_nodes
    from bayescount.spec import load_spec

    sim = bc.simulate(n_genes=300, n_per_group=4, frac_de=0.4, random_seed=7)
    samples = sim.samples.copy()
    samples["batch"] = ["x", "y"] * 4
    data = bc.CountData.from_pandas(sim.counts, samples, design)
    spec = load_spec("nb_trend")
    lay = layout(spec, data)
    prob = newton.GeneProblem(spec, data, lay)
    G, K, P = data.n_genes, prob.K, prob.P
    loc = np.zeros((G, K))
    loc[:, P] = np.log(0.1)
    scale = np.full((G, K), 10.0)
    scale[:, P] = 1.0
    theta, _, _, H, _ = newton.newton(prob, _initial_theta(data, lay, loc), loc, scale, curvature=True)
    cov = np.linalg.inv(-H)
    theta[:40, :P] += 4.0  # far from the mode: safeguarded steps
    slopes = np.arange(1, P)
    tables = {}
    for compiled in (True, False):
        monkeypatch.setattr(newton, "FUSED_NEWTON", compiled)
        tables[compiled] = dispersion_nodes(prob, theta.copy(), cov, np.arange(G), loc, scale, null_coords=slopes)
    a, b = tables[True], tables[False]
    assert b.null_gap is not None and (b.null_gap != 0).any()
    np.testing.assert_array_equal(a.ok, b.ok)
    for name in ("base", "b", "prec", "d", "null_gap"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-8, err_msg=name)
