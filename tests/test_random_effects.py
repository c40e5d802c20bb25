"""Random effects: formula terms, recovery of known donor scales, and the tidy GLMM against its exact MLE."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

import bayescount as bc
from bayescount.random_effects import build_random_effects, split_formula
from bayescount.regress import regress

SAMPLES = pd.DataFrame({"cond": list("AABBAABB"), "donor": [f"d{i}" for i in range(4)] * 2,
                        "batch": ["x", "y"] * 4}, index=[f"s{i}" for i in range(8)])


def test_terms_are_parsed_by_formulae():
    assert split_formula("~ cond + (1 + cond|donor) + (1|batch)") == ("~ 1 + cond", ("1|donor", "cond|donor", "1|batch"))
    re = build_random_effects("~ cond + (1 + cond|donor) + (1|batch)", SAMPLES)
    assert re.terms == ("1|donor", "cond|donor", "1|batch")
    # cond[B]|donor is zero for donors never in B: those columns carry no information and are dropped.
    donors_in_b = SAMPLES.loc[SAMPLES.cond == "B", "donor"].nunique()
    assert (re.term_of == 1).sum() == donors_in_b
    assert re.matrix.shape == (8, 4 + donors_in_b + 2)
    np.testing.assert_array_equal(re.matrix[:, re.term_of == 0].sum(axis=1), np.ones(8))


def test_random_effect_errors_are_clear():
    counts = pd.DataFrame(np.random.default_rng(0).poisson(10, (5, 8)), index=[f"g{i}" for i in range(5)],
                          columns=SAMPLES.index)
    with pytest.raises(bc.InputError, match="not a column"):
        bc.CountData.from_pandas(counts, SAMPLES, "~ cond + (1|patient)")
    with pytest.raises(bc.InputError, match="one level"):
        bc.CountData.from_pandas(counts, SAMPLES.assign(site="a"), "~ cond + (1|site)")
    data = bc.CountData.from_pandas(counts, SAMPLES, "~ cond + (1|donor)")
    with pytest.raises(bc.InputError, match="nb_donor"):
        bc.fit(data, model="nb_trend")
    plain = bc.CountData.from_pandas(counts, SAMPLES, "~ cond")
    with pytest.raises(bc.InputError, match="random-effect term"):
        bc.fit(plain, model="nb_donor")


@pytest.fixture(scope="module")
def donor_fit():
    """150 genes, 4 vs 4 donors x 60 cells, gene-specific donor sd (log-normal around 0.4, sd 0.5), 30% DE."""
    sim = bc.simulate_cells(n_genes=150, n_donors_per_group=4, cells_per_donor=60, donor_sd=0.4,
                            donor_sd_spread=0.5, frac_de=0.3, mean_log=1.0, random_seed=5)
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    return sim, bc.fit(data, model="nb_donor", method="map", random_seed=1)


def test_map_recovers_donor_scales(donor_fit):
    sim, res = donor_fit
    hyper = res.hyper
    assert abs(hyper["re_mu"][0] - np.log(0.4)) < 0.25
    assert 0.3 < hyper["re_sigma"][0] < 0.8
    re = res.random_effects(hdi_prob=0.95)
    truth = sim.truth.true_donor_sd.to_numpy()
    assert np.corrcoef(np.log(re.re_sd), np.log(truth))[0, 1] > 0.7
    assert 0.85 < np.median(re.re_sd / truth) < 1.15
    covered = (truth >= re.re_sd_hdi_low) & (truth <= re.re_sd_hdi_high)
    # The sds' draws are their quadrature nodes smoothed (map_draws.smooth_node_draws); at the
    # nodes themselves these HDIs covered 0.83 (95%) and 0.05 (50%) of the 150 true sds.
    assert 0.88 < covered.mean() <= 0.99
    half = res.random_effects(hdi_prob=0.5)
    assert 0.38 < ((truth >= half.re_sd_hdi_low) & (truth <= half.re_sd_hdi_high)).mean() < 0.62
    assert ((re.icc > 0) & (re.icc < 1)).all()


def test_map_lfc_with_donor_effects_is_calibrated(donor_fit):
    sim, res = donor_fit
    table = res.lfc(["condition", "B", "A"], hdi_prob=0.9)
    truth = sim.truth.loc[table.gene]
    covered = (truth.true_log2fc.to_numpy() >= table.hdi_low) & (truth.true_log2fc.to_numpy() <= table.hdi_high)
    assert 0.82 < covered.mean() < 0.98
    calls = table.svalue < 0.1
    assert calls.sum() >= 8
    assert (calls & ~truth.is_de.to_numpy()).sum() / calls.sum() <= 0.2


def test_random_slopes_and_two_layouts_in_one_process(donor_fit):
    """A second design (other donors, a slope term) after the first: nothing compiled for one leaks into the other."""
    sim = bc.simulate_cells(n_genes=20, n_donors_per_group=3, cells_per_donor=20, donor_sd=0.4, mean_log=1.5,
                            random_seed=4)
    samples = sim.samples.assign(x=np.random.default_rng(0).normal(size=len(sim.samples)))
    data = bc.CountData.from_pandas(sim.counts, samples, "~ condition + x + (1 + x|donor)", size_factors="poscounts")
    res = bc.fit(data, model="nb_donor", method="map", random_seed=1)
    sd = res.random_effects().groupby("term").re_sd.median()
    # Donor intercepts vary (sd 0.4); the slope on x does not vary by donor in the simulation.
    assert abs(sd["1|donor"] - 0.4) < 0.12
    assert sd["x|donor"] < 0.15


def poisson_glmm_mle(y, x, site, n_site):
    """Exact marginal MLE of a Poisson GLMM with a random intercept: 40-point Gauss-Hermite per site."""
    xg, wg = np.polynomial.hermite.hermgauss(40)

    def negll(p):
        b0, b1, log_s = p
        bb = np.sqrt(2.0) * np.exp(log_s) * xg
        total = 0.0
        for j in range(n_site):
            m = site == j
            eta = (b0 + b1 * x[m])[:, None] + bb[None]
            lp = (y[m, None] * eta - np.exp(eta) - special.gammaln(y[m] + 1)[:, None]).sum(axis=0)
            total += special.logsumexp(lp + np.log(wg / np.sqrt(np.pi)))
        return -total

    return optimize.minimize(negll, [0.5, 0.3, np.log(0.5)], method="Nelder-Mead",
                             options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 5000}).x


def test_tidy_random_intercept_matches_the_exact_marginal_mle():
    rng = np.random.default_rng(1)
    n_site, per = 12, 25
    site = np.repeat(np.arange(n_site), per)
    x = rng.normal(size=site.size)
    u = rng.normal(0.0, 0.6, n_site)
    y = rng.poisson(np.exp(0.5 + 0.4 * x + u[site]))
    df = pd.DataFrame({"y": y, "x": x, "site": [f"s{i}" for i in site]})
    _, table = regress(df, "y ~ x + (1|site)", model="poisson", random_seed=1)
    b0, b1, log_s = poisson_glmm_mle(y.astype(float), x, site, n_site)
    coef = table.set_index("term")
    # The slope sits on the MLE. The intercept is off by about 0.3 of its sd: at each sd node
    # the effects and coefficients are Gaussian around their joint mode, and for Poisson
    # groups of 25 the joint mode's intercept differs from the marginal one by that much.
    assert abs(coef.loc["x", "mean"] - b1) < 0.1 * coef.loc["x", "sd"]
    assert abs(coef.loc["Intercept", "mean"] - b0) < 0.4 * coef.loc["Intercept", "sd"]
    # The site sd: posterior mean a little above the MLE (which is biased low), within 20%.
    sd = coef.loc["sd(1|site)"]
    assert np.exp(log_s) * 0.95 < sd["mean"] < np.exp(log_s) * 1.2
    assert sd["hdi_low"] < np.exp(log_s) < sd["hdi_high"]
    assert list(table.component) == ["count", "count", "random"]


@pytest.mark.slow
def test_nuts_and_map_agree_on_donor_scales():
    sim = bc.simulate_cells(n_genes=30, n_donors_per_group=5, cells_per_donor=20, donor_sd=0.4, mean_log=1.5,
                            frac_de=0.5, lfc_sd=1.5, random_seed=2)
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    nuts = bc.fit(data, model="nb_donor", method="nuts", random_seed=2, draws=400, tune=600, chains=2)
    mapf = bc.fit(data, model="nb_donor", method="map", random_seed=2)
    import arviz as az

    rhat = az.rhat(nuts.idata, var_names=["re_sd", "beta"])
    assert float(rhat["re_sd"].max()) < 1.05
    # Intercepts trade off against the mean of a gene's donor effects: they mix more slowly.
    assert float(rhat["beta"].max()) < 1.1
    a, b = nuts.random_effects(), mapf.random_effects()
    assert abs(np.median(a.re_sd) - 0.4) < 0.12
    assert abs(np.median(a.re_sd) - np.median(b.re_sd)) < 0.08
    assert np.corrcoef(a.re_sd, b.re_sd)[0, 1] > 0.8
    la, lb = nuts.lfc(["condition", "B", "A"]), mapf.lfc(["condition", "B", "A"])
    assert np.corrcoef(la.log2fc, lb.log2fc)[0, 1] > 0.9


def paired_counts(G=800, D=8, seed=7):
    """D donors x 2 conditions, donor effects sd 0.5, 10% DE, dispersion 0.05 + 0.5 / mean."""
    rng = np.random.default_rng(seed)
    mu0 = np.exp(rng.normal(3, 1.5, G))
    is_de = rng.random(G) < 0.1
    lfc = np.where(is_de, rng.normal(0, 1.5, G), 0.0)
    u = rng.normal(0, 0.5, (G, D))
    donor, cond = np.repeat(np.arange(D), 2), np.tile([0, 1], D)
    size = 1 / (0.05 + 0.5 / mu0)[:, None]
    mu = mu0[:, None] * np.exp(np.log(2) * lfc[:, None] * cond[None] + u[:, donor])
    samples = pd.DataFrame({"donor": [f"d{i}" for i in donor], "condition": np.array(["A", "B"])[cond]},
                           index=[f"s{i}" for i in range(2 * D)])
    counts = pd.DataFrame(rng.negative_binomial(size, size / (size + mu)), index=[f"g{i}" for i in range(G)],
                          columns=samples.index)
    return counts, samples, pd.Series(is_de, index=counts.index)


def test_paired_design_donor_effects_keep_dispersion_and_calls_calibrated():
    """Two samples per donor: effects fitted jointly with the dispersion would soak up the counts'
    own noise (Neyman-Scott); integrating both keeps the trend and the calls honest. The same data
    with donors as fixed adjustment terms (``~ donor + condition``) must be calibrated too: only the
    last term gets the LFC prior."""
    counts, samples, is_de = paired_counts()
    for design, model in (("~ condition + (1|donor)", "nb_donor"), ("~ donor + condition", "nb_trend")):
        res = bc.fit(bc.CountData.from_pandas(counts, samples, design), model=model, random_seed=1)
        table = res.lfc(["condition", "B", "A"])
        calls = table.svalue.to_numpy() < 0.1
        de = is_de.loc[table.gene].to_numpy()
        assert calls.sum() >= 20
        assert (calls & ~de).sum() / calls.sum() <= 0.2, design
        assert 0.03 < res.hyper["a0"] < 0.08, design
    assert abs(res.hyper["a1"] - 0.5) < 0.25


def test_one_newton_step_per_scale_node_matches_two(donor_fit, monkeypatch):
    """The random-effect quadrature takes one Newton step per node from the nearest fitted node;
    a second step (the converged conditional mode) moves no LFC, sd or lfsr by more than 0.02
    and no HDI end by more than a quarter of the posterior sd (the HDI's histogram cells are ~0.1 sd)."""
    import bayescount.quadrature as quadrature

    sim, _ = donor_fit
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    # The donor sds' posterior means are draw averages: 2,000 draws hold their Monte Carlo
    # error near 1% (at 200, two seeds' means differed by up to 8%).
    res = bc.fit(data, model="nb_donor", method="map", random_seed=1, draws=2000)
    monkeypatch.setattr(quadrature, "NODE_STEPS", 2)
    two = bc.fit(data, model="nb_donor", method="map", random_seed=1, draws=2000)
    a, b = res.lfc(["condition", "B", "A"]), two.lfc(["condition", "B", "A"])
    for col in ("log2fc", "log2fc_sd", "lfsr"):
        assert np.abs(a[col].to_numpy() - b[col].to_numpy()).max() < 0.02, col
    for col in ("hdi_low", "hdi_high"):
        assert (np.abs(a[col] - b[col]) / b.log2fc_sd).max() < 0.25, col
    np.testing.assert_allclose(res.random_effects().re_sd, two.random_effects().re_sd, rtol=0.05)
