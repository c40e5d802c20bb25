"""One count response with an offset reproduces the statsmodels NB MLE."""

import numpy as np
import pandas as pd
import pytest

import bayescount as bc


@pytest.fixture(scope="module")
def tidy():
    rng = np.random.default_rng(12)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "smoker": rng.choice(["no", "yes"], n),
                       "person_years": rng.uniform(50, 500, n)})
    mu = df.person_years * np.exp(-4.0 + 0.5 * df.x + 0.7 * (df.smoker == "yes"))
    size = 1 / 0.4
    df["deaths"] = rng.negative_binomial(size, size / (size + mu))
    return df


def test_nb_regression_matches_statsmodels(tidy):
    from statsmodels.discrete.discrete_model import NegativeBinomial

    data = bc.CountData.from_tidy(tidy, "deaths", "~ x + smoker", offset=np.log(tidy.person_years))
    flat = {"intercept": {"sigma": 1e4}, "coefficients": {"sigma": 1e4}, "dispersion": {"sigma": 1e4}}
    res = bc.fit(data, model="nb", method="map", priors=flat, random_seed=1)
    X = data.design.matrix
    ref = NegativeBinomial(tidy.deaths.to_numpy(), X, offset=np.log(tidy.person_years.to_numpy())).fit(disp=0, maxiter=200)
    mode = res.idata["laplace"]["mode"].values[0]
    np.testing.assert_allclose(mode[:3], ref.params[:3], rtol=1e-4, atol=1e-5)
    assert np.exp(mode[3]) == pytest.approx(ref.params[3], rel=1e-3)
    # Laplace sds equal the MLE's standard errors (observed information).
    sd = np.sqrt(np.diag(res.idata["laplace"]["cov"].values[0]))[:3]
    np.testing.assert_allclose(sd, ref.bse[:3], rtol=2e-2)
    # The reported LFC is the posterior mean (dispersion integrated out): close to the mode here.
    assert res.lfc("smoker[T.yes]").log2fc.iloc[0] == pytest.approx(mode[2] / np.log(2), rel=1e-3)
