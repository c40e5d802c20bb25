"""Model checking: chunked log-likelihood, per-gene LOO/WAIC, template comparison, Pareto-k outliers, PPCs."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

import bayescount as bc
from bayescount.loglik import iter_log_likelihood, parse_memory

SEED = 4401
N_HALF = 300


@pytest.fixture(scope="module")
def half_zi():
    """300 zero-inflated genes (logit pi ~ N(-0.8, 0.5)) and 300 pure NB genes, 6 vs 6."""
    a = bc.simulate(n_genes=N_HALF, n_per_group=6, zero_inflation=(-0.8, 0.5), random_seed=SEED)
    b = bc.simulate(n_genes=N_HALF, n_per_group=6, random_seed=SEED + 1)
    ca, cb = a.counts.copy(), b.counts.copy()
    ca.index = [f"zi{i:03d}" for i in range(N_HALF)]
    cb.index = [f"nb{i:03d}" for i in range(N_HALF)]
    data = bc.CountData.from_pandas(pd.concat([ca, cb]), a.samples, design="~ group")
    fits = {m: bc.fit(data, model=m, random_seed=SEED, draws=400) for m in ("nb_trend", "zinb_trend")}
    return data, fits


def test_chunked_log_likelihood_equals_unchunked(half_zi):
    data, fits = half_zi
    res = bc.fit(data.subset_genes(np.arange(0, 600, 7)), random_seed=1, draws=60, log_likelihood=True)
    whole = res.idata["log_likelihood"]["counts"].values
    # A budget that forces one-gene chunks, and one that holds everything.
    tiny = bc.log_likelihood(res, memory=60 * 12 * 8 * 5)
    np.testing.assert_array_equal(tiny.values, whole)
    np.testing.assert_array_equal(bc.log_likelihood(res, memory="1GB").values, whole)
    # Every chunk stays under the budget.
    budget = parse_memory("200KB")
    sizes = [ll.nbytes for _, ll in iter_log_likelihood(res, memory=budget)]
    assert len(sizes) > 1 and max(sizes) * 5 <= budget


def test_waic_and_loo_against_hand_calculation(half_zi):
    """WAIC by hand from the pointwise log-likelihood; the per-gene LOO sums match arviz-stats' total."""
    import arviz_stats as azs

    data, _ = half_zi
    res = bc.fit(data.subset_genes(np.arange(0, 600, 20)), random_seed=2, draws=300, log_likelihood=True)
    ll = res.idata["log_likelihood"]["counts"].values.reshape(300, 30, 12)
    lppd = logsumexp(ll, axis=0) - np.log(300)
    p = ll.var(axis=0, ddof=1)
    w = bc.waic(res)
    np.testing.assert_allclose(w.genes.elpd, (lppd - p).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(w.genes.p, p.sum(axis=1), rtol=1e-12)
    assert w.elpd == pytest.approx((lppd - p).sum(), rel=1e-12)
    assert w.se == pytest.approx(np.sqrt(ll[0].size * np.var(lppd - p)), rel=1e-12)
    lo = bc.loo(res)
    with warnings.catch_warnings():
        # NB fits of half zero-inflated genes have some k > 0.6 (expected here); the reference warns.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        ref = azs.loo(res.idata, var_name="counts", pointwise=True, reff=1.0)
    assert lo.elpd == pytest.approx(ref.elpd, rel=1e-10)
    np.testing.assert_allclose(lo.pointwise["pareto_k"].values, ref.pareto_k.transpose("gene", "obs").values,
                               rtol=1e-10)
    # LOO never beats the in-sample fit, and WAIC and LOO agree where k is small.
    assert (lo.genes.p > 0).mean() > 0.9
    good = lo.genes.max_k < 0.5
    np.testing.assert_allclose(lo.genes.elpd[good], w.genes.elpd[good], atol=1.0)


def test_compare_prefers_zinb_for_zero_inflated_genes_only(half_zi):
    """Half the genes zero-inflated: ZINB preferred for most of them (measured 72%); for the NB half,
    NB or no preference for nearly all (measured 99.7%)."""
    _, fits = half_zi
    genes, overall = bc.compare(fits)
    assert list(genes.columns[:4]) == ["gene", "preferred", "elpd_diff", "dse"]
    assert {"elpd_nb_trend", "elpd_zinb_trend"} <= set(genes.columns)
    zi = genes.gene.str.startswith("zi")
    assert (genes.preferred[zi] == "zinb_trend").mean() > 0.55
    assert (genes.preferred[~zi] != "zinb_trend").mean() > 0.95
    assert list(overall.columns) == ["model", "rank", "elpd", "se", "elpd_diff", "dse", "p", "weight"]
    assert overall.model.iloc[0] == "zinb_trend" and overall["rank"].tolist() == [0, 1]
    assert overall.weight.sum() == pytest.approx(1.0)


def test_planted_outlier_gets_a_pareto_k_flag():
    sim = bc.simulate(n_genes=200, n_per_group=6, random_seed=SEED + 2)
    counts = sim.counts.copy()
    clean = bc.fit(bc.CountData.from_pandas(counts, sim.samples, design="~ group"), random_seed=1, draws=400)
    flags_clean = bc.loo(clean).outliers()
    # A well-expressed gene, one sample's count multiplied by 50.
    gene = sim.truth.true_base_mean.sub(200).abs().idxmin()
    counts.loc[gene, "s003"] *= 50
    dirty = bc.fit(bc.CountData.from_pandas(counts, sim.samples, design="~ group"), random_seed=1, draws=400)
    out = bc.loo(dirty)
    flags = out.outliers()
    assert ((flags.gene == gene) & (flags.obs == "s003")).any()
    k = out.pointwise["pareto_k"]
    assert float(k.sel(gene=gene, obs="s003")) == float(k.sel(gene=gene).max())
    assert float(k.sel(gene=gene, obs="s003")) >= np.quantile(k.values, 0.99)
    # Clean 6-vs-6 data: each gene has 12 counts for 3 parameters, so single counts are
    # influential; measured 2.6% of observations above 0.7 with 400 draws (1.7% with 1,000).
    assert len(flags_clean) <= 0.035 * counts.size


def test_ppc_zero_fraction_flags_zero_inflation_not_nb():
    """Cell-sized genes (200 observations): an NB fit cannot make the extra zeros of
    zero-inflated counts (logit pi ~ N(-0.5, 0.3) at mean ~100); on NB counts the checks are quiet."""
    zi = bc.simulate(n_genes=80, n_per_group=100, zero_inflation=(-0.5, 0.3), mean_log=np.log(100),
                     mean_log_sd=0.5, random_seed=SEED + 3)
    data = bc.CountData.from_pandas(zi.counts, zi.samples, design="~ group", size_factors="poscounts")
    p = bc.ppc(bc.fit(data, random_seed=1, draws=200))
    extreme = (p.zero_frac_ppp < 0.025) | (p.zero_frac_ppp > 0.975)
    assert extreme.mean() > 0.6 and p.zero_frac_ppp.median() < 0.05
    assert len(p.attrs["failed_genes"]) >= extreme.sum()
    nb = bc.simulate(n_genes=80, n_per_group=100, mean_log=np.log(100), mean_log_sd=0.5, random_seed=SEED + 4)
    q = bc.ppc(bc.fit(nb.data, random_seed=1, draws=200))
    for t in ("zero_frac", "vmr", "pearson", "max"):
        assert ((q[f"{t}_ppp"] < 0.025) | (q[f"{t}_ppp"] > 0.975)).mean() <= 0.08, t
    assert 0.3 < q.zero_frac_ppp.median() < 0.7 or q.zero_frac_obs.max() == 0


def test_poisson_overdispersion_flag(half_zi):
    data, _ = half_zi
    sub = data.subset_genes(np.arange(N_HALF, 2 * N_HALF, 5))  # NB genes
    p = bc.ppc(bc.fit(sub, model="poisson", random_seed=1, draws=100))
    assert p.overdispersed.mean() > 0.8
    assert (p.pearson_ppp < 0.025).mean() > 0.6


@pytest.mark.slow
def test_loo_ppc_and_diagnostics_on_nuts_draws(nuts_fit):
    from bayescount.diagnostics import diagnostics

    genes, checks = diagnostics(nuts_fit, warn=False)
    assert {"rhat_max", "ess_bulk_min", "divergences", "tree_depth_hits"} <= set(checks.check)
    import arviz_stats as azs

    beta = nuts_fit.idata["posterior"]["beta"].isel(gene=0)
    assert genes.rhat_max.iloc[0] >= float(azs.rhat(beta).max())
    assert genes.ess_bulk_min.iloc[0] <= float(azs.ess(beta, method="bulk").min())
    assert genes.rhat_max.median() < 1.05 and genes.ess_bulk_min.median() > 50
    failing = checks.set_index("check").loc["genes_failing", "value"]
    assert failing == int((~genes.ok).sum())
    lo = bc.loo(nuts_fit)
    assert np.isfinite(lo.elpd) and (lo.genes.p > 0).mean() > 0.9
    p = bc.ppc(nuts_fit)
    assert (p.failed != "").mean() < 0.1
