"""Shared, session-scoped simulated data and fits: compilation dominates test time."""

import numpy as np
import pytest

import bayescount as bc

SEED = 20261121


@pytest.fixture(scope="session")
def sim_de():
    """2,000 genes, 6 vs 6, half the genes DE: the recovery/coverage data set."""
    return bc.simulate(n_genes=2000, n_per_group=6, frac_de=0.5, lfc_sd=1.5, random_seed=SEED)


@pytest.fixture(scope="session")
def map_fit(sim_de):
    return bc.fit(sim_de.data, model="nb_trend", method="map", random_seed=SEED)


@pytest.fixture(scope="session")
def advi_fit(sim_de):
    return bc.fit(sim_de.data, model="nb_trend", method="advi", random_seed=SEED, draws=400)


@pytest.fixture(scope="session")
def sim_small():
    """300 genes, 6 vs 6, for NUTS."""
    return bc.simulate(n_genes=300, n_per_group=6, frac_de=0.5, lfc_sd=1.5, random_seed=SEED + 1)


@pytest.fixture(scope="session")
def nuts_fit(sim_small):
    return bc.fit(sim_small.data, model="nb_trend", method="nuts", random_seed=SEED, draws=500, tune=500, chains=2)


def truth_for(sim, table):
    return sim.truth.loc[table.gene.to_numpy()]


def sign_correct(table, truth):
    return np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy())


def assert_derivatives_match(prob, theta, scale: float = 2.0, eps: float = 1e-5):
    """The batched problem's gradient and Hessian against central finite differences (prior N(0, scale))."""
    rows = np.arange(theta.shape[0])
    loc, sc = np.zeros_like(theta), np.full_like(theta, scale)
    _, g, H = prob.derivs(theta, rows, loc, sc)
    for k in range(theta.shape[1]):
        e = np.zeros(theta.shape[1])
        e[k] = eps
        fd = (prob.logpost(theta + e, rows, loc, sc) - prob.logpost(theta - e, rows, loc, sc)) / (2 * eps)
        np.testing.assert_allclose(g[:, k], fd, rtol=1e-5, atol=1e-5)
        gp, gm = prob.derivs(theta + e, rows, loc, sc)[1], prob.derivs(theta - e, rows, loc, sc)[1]
        np.testing.assert_allclose(H[:, :, k], (gp - gm) / (2 * eps), rtol=1e-4, atol=1e-4)
    assert_held_derivatives_match(prob, theta, scale)


def assert_held_derivatives_match(prob, theta, scale: float = 2.0):
    """Holding a gene parameter (its own kernel, no derivatives in it) leaves every other entry unchanged."""
    rows = np.arange(theta.shape[0])
    loc, sc = np.zeros_like(theta), np.full_like(theta, scale)
    f, g, H = prob.derivs(theta, rows, loc, sc)
    for q in range(prob.Q):
        fh, gh, Hh = prob.derivs(theta, rows, loc, sc, held=(q,))
        free = np.setdiff1d(np.arange(prob.K), prob.cols[q])
        np.testing.assert_allclose(fh, f, rtol=1e-12)
        np.testing.assert_allclose(gh[:, free], g[:, free], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(Hh[:, free[:, None], free[None, :]], H[:, free[:, None], free[None, :]],
                                   rtol=1e-12, atol=1e-12)
    # With every gene parameter held, a part that splits off its eta-free terms (the NB's
    # log-gamma normalizer) gives the same value when the caller supplies them.
    every = tuple(range(prob.Q))
    norm = prob.normalizer(theta, rows)
    if prob.Q and norm is not None:
        fh, gh, Hh = prob.derivs(theta, rows, loc, sc, held=every)
        fs, gs, Hs = prob.derivs(theta, rows, loc, sc, held=every, normalizer=norm)
        np.testing.assert_allclose(fs, fh, rtol=1e-12)
        np.testing.assert_allclose(fs, f, rtol=1e-12)
        np.testing.assert_array_equal(gs, gh)
        np.testing.assert_array_equal(Hs, Hh)
        assert not np.allclose(prob.derivs(theta, rows, loc, sc, held=every, normalizer=0.0 * norm)[0], f)
