"""One-response models (poisson, nb, zinb, hurdle) against statsmodels' MLEs, and `bayescount regress`."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from bayescount.cli import main
from bayescount.regress import parse_formula, regress

FLAT = {"intercept": {"sigma": 1e4}, "coefficients": {"sigma": 1e4}, "dispersion": {"sigma": 1e4},
        "zero_inflation": {"sigma": 1e4, "coef_sigma": 1e4}}


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(21)
    n = 800
    df = pd.DataFrame({"x": rng.normal(size=n), "grp": rng.choice(["a", "b"], n),
                       "exposure": rng.uniform(0.5, 3.0, n)})
    mu = df.exposure * np.exp(0.8 + 0.6 * df.x - 0.5 * (df.grp == "b"))
    size = 1 / 0.5
    nb = rng.negative_binomial(size, size / (size + mu))
    df["zi"] = np.where(rng.random(n) < 0.25, 0, nb)
    pos = nb.copy()
    while (pos == 0).any():  # zero-truncated draws for the hurdle's positive part
        redo = pos == 0
        pos[redo] = rng.negative_binomial(size, size / (size + mu[redo]))
    df["hu"] = np.where(rng.random(n) < 0.3, 0, pos)
    df["po"] = rng.poisson(mu)
    # Zero probabilities that depend on covariates (zero-part formulas).
    p0 = expit(-1.2 + 0.8 * (df.grp == "b") + 0.5 * df.x)
    df["zic"] = np.where(rng.random(n) < p0, 0, nb)
    df["huc"] = np.where(rng.random(n) < p0, 0, pos)
    return df


def _mode(res):
    return res.idata["laplace"]["mode"].values[0]


def test_offset_and_zero_part_are_parsed(counts):
    response, design, offset, zero = parse_formula("zi ~ x + grp + offset(log(exposure)) | 1", counts)
    assert (response, design, zero) == ("zi", "~ 1 + x + grp", "1")
    np.testing.assert_allclose(offset, np.log(counts.exposure))


def test_poisson_matches_statsmodels_glm(counts):
    import statsmodels.api as sm

    res, table = regress(counts, "po ~ x + grp + offset(log(exposure))", model="poisson",
                         priors={"intercept": {"sigma": 1e4}, "coefficients": {"sigma": 1e4}}, random_seed=1)
    X = sm.add_constant(np.column_stack([counts.x, counts.grp == "b"]).astype(float))
    ref = sm.GLM(counts.po, X, family=sm.families.Poisson(), offset=np.log(counts.exposure)).fit()
    np.testing.assert_allclose(_mode(res), ref.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["sd"], ref.bse, rtol=2e-2)
    assert table.attrs["loglik"] == pytest.approx(ref.llf, rel=1e-6)


def test_zinb_matches_statsmodels(counts):
    from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP

    res, table = regress(counts, "zi ~ x + grp + offset(log(exposure)) | 1", model="zinb", priors=FLAT,
                         random_seed=1)
    X = np.column_stack([np.ones(len(counts)), counts.x, counts.grp == "b"]).astype(float)
    ref = ZeroInflatedNegativeBinomialP(counts.zi, X, exog_infl=np.ones((len(counts), 1)),
                                        offset=np.log(counts.exposure), p=2).fit(disp=0, maxiter=500, method="bfgs")
    infl, beta, alpha = np.asarray(ref.params)[0], np.asarray(ref.params)[1:4], np.asarray(ref.params)[4]
    mode = _mode(res)
    np.testing.assert_allclose(mode[:3], beta, rtol=2e-3, atol=2e-3)
    assert np.exp(mode[3]) == pytest.approx(alpha, rel=5e-3)
    assert mode[4] == pytest.approx(infl, abs=5e-3)
    assert expit(mode[4]) == pytest.approx(0.25, abs=0.06)
    assert table.component.tolist() == ["count"] * 3 + ["dispersion", "zero"]
    assert table.attrs["loglik"] == pytest.approx(ref.llf, rel=1e-5)


def test_zinb_with_zero_covariates_matches_statsmodels(counts):
    from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP

    res, table = regress(counts, "zic ~ x + grp + offset(log(exposure)) | grp + x", model="zinb", priors=FLAT,
                         random_seed=1)
    X = np.column_stack([np.ones(len(counts)), counts.x, counts.grp == "b"]).astype(float)
    Z = np.column_stack([np.ones(len(counts)), counts.grp == "b", counts.x]).astype(float)
    ref = ZeroInflatedNegativeBinomialP(counts.zic, X, exog_infl=Z, offset=np.log(counts.exposure),
                                        p=2).fit(disp=0, maxiter=1000, method="bfgs")
    params = np.asarray(ref.params)
    mode = _mode(res)
    np.testing.assert_allclose(mode[:3], params[3:6], rtol=5e-3, atol=5e-3)
    assert np.exp(mode[3]) == pytest.approx(params[6], rel=1e-2)
    np.testing.assert_allclose(mode[4:7], params[:3], atol=1e-2)
    assert table.term.tolist()[-3:] == ["Intercept", "grp[T.b]", "x"]
    assert table.component.tolist()[-3:] == ["zero"] * 3
    assert table.attrs["loglik"] == pytest.approx(ref.llf, rel=1e-5)
    # The zero part's change per group is on the log-odds scale, with the truth 0.8 inside its interval.
    eff = res.zero_effect(["grp", "b", "a"])
    assert eff.hdi_low.iloc[0] < 0.8 < eff.hdi_high.iloc[0]


def test_hurdle_zero_covariates_are_a_logistic_regression(counts):
    import statsmodels.api as sm

    res, _ = regress(counts, "huc ~ x + grp + offset(log(exposure)) | grp + x", model="hurdle", priors=FLAT,
                     random_seed=1)
    Z = np.column_stack([np.ones(len(counts)), counts.grp == "b", counts.x]).astype(float)
    ref = sm.Logit((counts.huc == 0).astype(float), Z).fit(disp=0)
    np.testing.assert_allclose(_mode(res)[4:7], ref.params, atol=2e-3)


def test_hurdle_matches_its_two_parts(counts):
    from statsmodels.discrete.truncated_model import TruncatedLFNegativeBinomialP

    res, _ = regress(counts, "hu ~ x + grp + offset(log(exposure))", model="hurdle", priors=FLAT, random_seed=1)
    pos = counts.hu > 0
    X = np.column_stack([np.ones(len(counts)), counts.x, counts.grp == "b"]).astype(float)
    ref = TruncatedLFNegativeBinomialP(counts.hu[pos], X[pos], offset=np.log(counts.exposure[pos]),
                                       truncation=0, p=2).fit(disp=0, maxiter=500, method="bfgs")
    mode, params = _mode(res), np.asarray(ref.params)
    np.testing.assert_allclose(mode[:3], params[:3], rtol=2e-3, atol=2e-3)
    assert np.exp(mode[3]) == pytest.approx(params[3], rel=5e-3)
    # The zero part with an intercept only is the logit of the fraction of zeros.
    assert mode[4] == pytest.approx(logit(np.mean(~pos)), abs=1e-3)


def test_cli_regress(counts, tmp_path, capsys):
    data = tmp_path / "d.csv"
    counts.to_csv(data, index=False)
    out = tmp_path / "coefs.csv"
    rc = main(["regress", str(data), "--formula", "zi ~ x + grp + offset(log(exposure)) | 1", "--model", "zinb",
               "--out", str(out), "--seed", "1", "--quiet"])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["component", "term", "mean", "sd", "hdi_low", "hdi_high"]
    assert "log-likelihood at the MAP" in capsys.readouterr().out


@pytest.mark.parametrize("formula, model, message", [
    ("zi ~ x | nothere", "zinb", "nothere"),
    ("zi ~ x | 1", "nb", "needs --model zinb or hurdle"),
    ("zi ~ x + offset(log(nothere))", "nb", "cannot evaluate"),
    ("missing ~ x", "nb", "response column 'missing' not found"),
])
def test_cli_regress_bad_input(counts, tmp_path, capsys, formula, model, message):
    data = tmp_path / "d.csv"
    counts.to_csv(data, index=False)
    out = tmp_path / "coefs.csv"
    rc = main(["regress", str(data), "--formula", formula, "--model", model, "--out", str(out), "--quiet"])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_regress_advi_agrees_with_map(counts):
    """ADVI on a wide-prior one-response model (starts narrow, so exp(eta) stays in range)."""
    formula = "po ~ x + grp + offset(log(exposure))"
    _, by_map = regress(counts, formula, model="poisson", random_seed=1)
    _, by_advi = regress(counts, formula, model="poisson", method="advi", random_seed=1, draws=300)
    np.testing.assert_allclose(by_advi["mean"], by_map["mean"], atol=3 * by_map["sd"].max())
    assert by_advi.attrs["loglik"] == pytest.approx(by_map.attrs["loglik"], abs=5.0)


def test_random_effects_with_a_zero_part():
    """``y ~ x + (1|site) | g``: group-level effects in the count part, covariates in the zero part."""
    rng = np.random.default_rng(3)
    n, sites = 900, [f"s{i}" for i in range(12)]
    df = pd.DataFrame({"x": rng.normal(size=n), "site": rng.choice(sites, n), "g": rng.choice(["a", "b"], n)})
    u = dict(zip(sites, rng.normal(0, 0.5, len(sites))))
    mu = np.exp(1.0 + 0.5 * df.x + df.site.map(u))
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
    df["y"] = np.where(rng.random(n) < expit(-1.0 + 1.0 * (df.g == "b")), 0, y)
    _, table = regress(df, "y ~ x + (1|site) | g", model="zinb", random_seed=1)
    est = dict(zip(table.component + ":" + table.term, table["mean"]))
    sd = dict(zip(table.component + ":" + table.term, table["sd"]))
    truth = {"count:x": 0.5, "zero:Intercept": -1.0, "zero:g[T.b]": 1.0, "dispersion:log(dispersion)": np.log(0.5)}
    for key, value in truth.items():
        assert abs(est[key] - value) < 3 * sd[key], key
    assert 0.3 < est["random:sd(1|site)"] < 0.9
