"""Zero-part covariates at genome scale: the zero probability of ZINB/hurdle templates depends on a formula."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

import bayescount as bc
from bayescount.model import layout
from bayescount.newton import GeneProblem
from conftest import assert_derivatives_match

SEED = 9151
ZI = (-1.5, 0.7)
EFFECT = (0.3, 1.5)  # 30% of genes change their zero log-odds in group B by N(0, 1.5)


@pytest.fixture(scope="module")
def zsim():
    return bc.simulate(n_genes=800, n_per_group=12, frac_de=0.2, zero_inflation=ZI, zero_effect=EFFECT,
                       random_seed=SEED)


@pytest.fixture(scope="module")
def zfit(zsim):
    return bc.fit(zsim.data, model="zinb_trend", zero_design="~ group", random_seed=SEED)


def test_zero_effects_recovered_with_calibrated_intervals(zsim, zfit):
    hyper = zfit.hyper
    assert hyper["zi_mu"] == pytest.approx(ZI[0], abs=0.3)
    assert hyper["zi_sigma"] == pytest.approx(ZI[1], abs=0.25)
    z = zfit.zero_effect(["group", "B", "A"])
    assert z.attrs["contrast"] and list(z.columns) == ["gene", "zero_prob", "log_odds_ratio", "log_odds_ratio_sd",
                                                      "hdi_low", "hdi_high", "lfsr", "flag"]
    truth = zsim.truth.loc[z.gene, "true_zero_log_odds_ratio"].to_numpy()
    high = zsim.truth.loc[z.gene, "true_base_mean"].to_numpy() > 20
    assert np.corrcoef(z.log_odds_ratio[high], truth[high])[0, 1] > 0.5
    covered = (z.hdi_low <= truth) & (truth <= z.hdi_high)
    assert 0.92 <= covered.mean() <= 0.99
    # Genes whose zero probability does not change: an HDI excluding 0 is rare.
    null = truth == 0
    excludes = (z.hdi_low > 0) | (z.hdi_high < 0)
    assert excludes[null].mean() < 0.04
    assert excludes[~null].mean() > 0.1  # 12 vs 12 samples say little about most genes' zeros
    # The count part is unaffected: LFCs still track the truth.
    lfc = zfit.lfc()
    t = zsim.truth.loc[lfc.gene, "true_log2fc"].to_numpy()
    assert np.corrcoef(lfc.log2fc[high], t[high])[0, 1] > 0.95
    # zero_prob is the zero probability averaged over samples.
    assert zfit.gene_summary().zero_prob.between(0, 1).all()


def test_zero_design_derivatives_and_model_logp(zsim):
    data = zsim.data.subset_genes(np.arange(20)).with_zero_design("~ group")
    spec = bc.load_spec("hurdle_trend")
    lay = layout(spec, data)
    assert lay.names[-3:] == ("log_dispersion", "logit_zero[Intercept]", "logit_zero[group[T.B]]")
    prob = GeneProblem(spec, data, lay)
    rng = np.random.default_rng(1)
    G = data.n_genes
    theta = np.column_stack([np.log(data.base_mean + 1), rng.normal(0, 0.5, G), rng.normal(-2, 0.5, G),
                             rng.normal(-1, 0.5, G), rng.normal(0, 1, G)])
    assert_derivatives_match(prob, theta)
    # The PyMC model's likelihood with the zero design, against scipy.
    zspec = bc.load_spec("zinb_trend")
    model = bc.build_model(zspec, data)
    outs = [model.logp(vars=[model["counts"]]),
            *model.replace_rvs_by_values([model["beta"], model["dispersion"], model["logit_zero"]])]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    point = {k: v + rng.normal(0, 0.5, size=np.shape(v)) for k, v in model.initial_point().items()}
    logp, beta, disp, gamma = fn(point)
    mu = np.exp(data.offset[None, :] + beta @ data.design.matrix.T)
    pi = expit(gamma @ data.zero_design.matrix.T)
    size = 1.0 / disp[:, None]
    nb = stats.nbinom.logpmf(data.counts, size, size / (size + mu))
    ref = np.where(data.counts == 0, np.logaddexp(np.log(pi), np.log1p(-pi) + nb), np.log1p(-pi) + nb).sum()
    assert logp == pytest.approx(ref, rel=1e-10)


def test_zero_design_errors(zsim):
    with pytest.raises(bc.InputError, match="no zero part"):
        bc.fit(zsim.data.subset_genes(np.arange(10)), model="nb_trend", zero_design="~ group")
    with pytest.raises(bc.InputError, match="intercept"):
        zsim.data.with_zero_design("~ 0 + group")
    with pytest.raises(bc.InputError, match="no zero-part covariates"):
        bc.fit(zsim.data.subset_genes(np.arange(30)), model="zinb_trend", random_seed=1).zero_effect()


def test_cli_zero_design(zsim, tmp_path):
    from bayescount.cli import main

    zsim.counts.iloc[:150].to_csv(tmp_path / "c.csv")
    zsim.samples.to_csv(tmp_path / "s.csv")
    args = ["fit", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group",
            "--model", "zinb_trend", "--quiet", "--seed", "2"]
    rc = main(args + ["--zero-design", "~ group", "--zero-out", str(tmp_path / "z.csv"), "--out", str(tmp_path / "r.csv")])
    assert rc == 0
    z = pd.read_csv(tmp_path / "z.csv")
    assert len(z) == 150 and "log_odds_ratio" in z
    rc = main(args + ["--zero-out", str(tmp_path / "z2.csv")])
    assert rc == 2 and not (tmp_path / "z2.csv").exists()
