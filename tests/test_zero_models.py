"""Zero-inflated and hurdle NB templates: exact log-densities, recovery on MAP, ADVI and NUTS."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

import bayescount as bc

TRUE_ZI = (-2.0, 1.0)  # logit structural-zero probability ~ N(-2, 1): about 15% on average


def zinb_reference(y, mu, dispersion, zero_prob):
    size = 1.0 / dispersion
    nb = stats.nbinom.logpmf(y, size, size / (size + mu))
    return np.where(y == 0, np.log(zero_prob + (1 - zero_prob) * np.exp(nb)), np.log1p(-zero_prob) + nb)


def test_zinb_part_logp_equals_scipy():
    spec = bc.load_spec("zinb_trend")
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 3, 17, 250, 4000, 0, 12])
    eta = rng.normal(2.0, 2.0, y.size)
    log_disp = rng.normal(-1.5, 1.0, y.size)
    logit_zero = rng.normal(-1.0, 1.5, y.size)
    import pymc as pm

    lp = pm.logp(spec.likelihood.dist(eta, {"log_dispersion": log_disp, "logit_zero": logit_zero}), y).eval()
    ref = zinb_reference(y, np.exp(eta), np.exp(log_disp), expit(logit_zero))
    np.testing.assert_allclose(lp, ref, rtol=1e-10, atol=1e-10)


def hurdle_reference(y, mu, dispersion, zero_prob):
    size = 1.0 / dispersion
    p = size / (size + mu)
    positive = np.log1p(-zero_prob) + stats.nbinom.logpmf(y, size, p) - stats.nbinom.logsf(0, size, p)
    return np.where(y == 0, np.log(zero_prob), positive)


def test_hurdle_part_logp_and_derivatives():
    """Exact against scipy, including counts where NB(0) underflows; derivatives stay finite there."""
    spec = bc.load_spec("hurdle_trend")
    rng = np.random.default_rng(1)
    y = np.array([0, 0, 1, 3, 17, 250, 4000, 0, 2840, 0])
    eta = np.r_[rng.normal(2.0, 2.0, 7), 8.2, 8.2, -25.0]
    log_disp = np.r_[rng.normal(-1.5, 1.0, 7), -5.5, -5.5, 0.0]
    logit_zero = rng.normal(-1.0, 1.5, y.size)
    import pymc as pm

    lp = pm.logp(spec.likelihood.dist(eta, {"log_dispersion": log_disp, "logit_zero": logit_zero}), y).eval()
    ref = hurdle_reference(y, np.exp(eta), np.exp(log_disp), expit(logit_zero))
    np.testing.assert_allclose(lp, ref, rtol=1e-9, atol=1e-9)
    from bayescount.newton import likelihood_kernel

    out = likelihood_kernel(spec.likelihood)[0](*(np.atleast_2d(a).astype(float) for a in (y, eta, log_disp, logit_zero)))
    assert all(np.all(np.isfinite(o)) for o in out)


def test_zinb_full_model_logp_equals_scipy():
    """Every term: likelihood, dispersion trend and zero-inflation priors, hyperpriors with Jacobians."""
    data = bc.simulate(n_genes=25, n_per_group=3, zero_inflation=TRUE_ZI, random_seed=2).data
    spec = bc.load_spec("zinb_trend", {"coefficients": {"part": "normal_learned_scale"}})
    model = bc.build_model(spec, data)
    rng = np.random.default_rng(3)
    point = {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in model.initial_point().items()}
    logp = model.compile_logp()(point)
    a0, a1, sd, tau, zs = (np.exp(point[f"{n}_log__"]) for n in ("a0", "a1", "sigma_d", "tau", "zi_sigma"))
    zm = point["zi_mu"]
    d, z = spec.dispersion, spec.zero_inflation
    ref = (
        stats.lognorm.logpdf(a0, d.log_a0_sigma, scale=np.exp(d.log_a0_mu)) + np.log(a0)
        + stats.lognorm.logpdf(a1, d.log_a1_sigma, scale=np.exp(d.log_a1_mu)) + np.log(a1)
        + stats.halfnorm.logpdf(sd, scale=d.sigma_d_sigma) + np.log(sd)
        + (stats.halfnorm.logpdf(tau, scale=spec.coefficients.tau_sigma) + np.log(tau)).sum()
        + stats.norm.logpdf(zm, z.mu_mu, z.mu_sigma)
        + stats.halfnorm.logpdf(zs, scale=z.sigma_sigma) + np.log(zs)
        + stats.norm.logpdf(point["beta_z"]).sum() + stats.norm.logpdf(point["log_dispersion_z"]).sum()
        + stats.norm.logpdf(point["logit_zero_z"]).sum()
    )
    beta = point["beta_z"] * np.array([spec.intercept.sigma, tau[0]])
    logdisp = np.log(a0 + a1 / data.base_mean) + sd * point["log_dispersion_z"]
    logit_zero = zm + zs * point["logit_zero_z"]
    mu = np.exp(data.offset[None, :] + beta @ data.design.matrix.T)
    ref += zinb_reference(data.counts, mu, np.exp(logdisp)[:, None], expit(logit_zero)[:, None]).sum()
    assert logp == pytest.approx(ref, rel=1e-9)


@pytest.fixture(scope="module")
def zi_sim():
    return bc.simulate(n_genes=1500, n_per_group=6, frac_de=0.2, zero_inflation=TRUE_ZI, random_seed=4)


@pytest.fixture(scope="module")
def zi_map(zi_sim):
    return bc.fit(zi_sim.data, model="zinb_trend", method="map", random_seed=1)


def _lfc_corr(sim, res):
    table = res.lfc(["group", "B", "A"])
    truth = sim.truth.loc[table.gene]
    high = truth.true_base_mean.to_numpy() >= 10
    return table, truth, np.corrcoef(table.log2fc[high], truth.true_log2fc[high])[0, 1]


def _check_map_recovery(sim, res, zi, min_corr, min_calls, min_zero_corr):
    """Hyperparameters, LFCs, s-value calls and per-gene zero probabilities against the truth."""
    h = res.hyper
    assert h["zi_mu"] == pytest.approx(zi[0], abs=0.3)
    assert h["zi_sigma"] == pytest.approx(zi[1], abs=0.35)
    assert h["sigma_d"] == pytest.approx(0.5, rel=0.15)
    assert h["a0"] == pytest.approx(0.05, rel=0.2)
    table, truth, corr = _lfc_corr(sim, res)
    assert corr >= min_corr
    right = truth.is_de.to_numpy() & (np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy()))
    calls = table.svalue.to_numpy() < 0.1
    assert calls.sum() >= min_calls and 1 - right[calls].mean() <= 0.13
    genes = res.gene_summary().set_index("gene").loc[table.gene]
    assert np.corrcoef(genes.zero_prob, truth.true_zero_prob)[0, 1] >= min_zero_corr
    assert res.idata["map_stats"]["converged"].values.mean() >= 0.99


def test_map_recovers_zero_inflation_trend_and_lfc(zi_sim, zi_map):
    _check_map_recovery(zi_sim, zi_map, TRUE_ZI, min_corr=0.95, min_calls=150, min_zero_corr=0.7)


def test_nb_trend_misfits_zero_inflated_counts(zi_sim, zi_map):
    """Why the template exists: NB alone blows up the dispersions and loses the DE genes."""
    nb = bc.fit(zi_sim.data, model="nb_trend", method="map", random_seed=1)
    assert nb.hyper["sigma_d"] > 2 * zi_map.hyper["sigma_d"]
    _, truth, nb_corr = _lfc_corr(zi_sim, nb)
    nb_calls = (nb.lfc(["group", "B", "A"]).svalue < 0.1).sum()
    zi_calls = (zi_map.lfc(["group", "B", "A"]).svalue < 0.1).sum()
    assert nb_corr < 0.9 and nb_calls < 0.5 * zi_calls


@pytest.fixture(scope="module")
def zi_small():
    return bc.simulate(n_genes=150, n_per_group=6, frac_de=0.5, zero_inflation=(-2.0, 0.5), random_seed=5)


def test_map_recovers_hurdle():
    sim = bc.simulate(n_genes=1500, n_per_group=6, frac_de=0.2, hurdle=(-1.0, 1.0), random_seed=6)
    res = bc.fit(sim.data, model="hurdle_trend", method="map", random_seed=1)
    _check_map_recovery(sim, res, (-1.0, 1.0), min_corr=0.92, min_calls=100, min_zero_corr=0.75)


@pytest.fixture(scope="module")
def hurdle_small():
    return bc.simulate(n_genes=150, n_per_group=6, frac_de=0.5, hurdle=(-2.0, 0.5), random_seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("model, method", [("zinb_trend", "nuts"), ("zinb_trend", "advi"),
                                           ("hurdle_trend", "nuts"), ("hurdle_trend", "advi")])
def test_pymc_paths_recover_zero_models(zi_small, hurdle_small, model, method):
    sim = zi_small if model == "zinb_trend" else hurdle_small
    kw = dict(draws=300, tune=300, chains=2) if method == "nuts" else dict(draws=300)
    res = bc.fit(sim.data, model=model, method=method, random_seed=1, **kw)
    _, _, corr = _lfc_corr(sim, res)
    assert corr >= 0.93
    assert res.hyper["zi_mu"] == pytest.approx(-2.0, abs=0.7)
    genes = res.gene_summary()
    assert list(genes.columns) == ["gene", "dispersion", "zero_prob", "flag"]
    assert np.corrcoef(genes.zero_prob, sim.truth.loc[genes.gene].true_zero_prob)[0, 1] >= 0.4
