"""Negative binomial regression of one count with an exposure offset (glm.nb).

Not every count problem is a genome: here there is one count response in a
tidy table (one row per person-group), a continuous covariate ``x``, a
two-level factor ``smoker`` and an exposure in person-years. The model is

    count_i ~ NB(mu_i, dispersion),  var = mu + dispersion * mu**2
    log mu_i = log(person_years_i) + b0 + b1 * x_i + b2 * [smoker_i == "yes"]

We simulate 300 rows with known coefficients and dispersion 0.3, build the
data with ``bc.CountData.from_tidy(df, response="count", design="~ x + smoker",
offset=np.log(df["person_years"]))`` (the offset may also be a column name),
and fit the single-response ``model="nb"`` template (wide fixed priors:
Normal(0, 10) on coefficients, Normal(log 0.1, 3) on the log dispersion)

* by MAP + Laplace (``method="map"``): the mode is in
  ``res.idata["laplace"]["mode"]`` with ``param`` coordinates = coefficient
  names + ``"log_dispersion"``, and
* by NUTS (``method="nuts"``, 2 chains x 500 draws after 500 tuning steps):
  posterior means of ``res.idata["posterior"]["beta"]`` and ``["dispersion"]``,

and compare both with the maximum-likelihood fit of statsmodels'
``NegativeBinomial(y, X, offset=log_py).fit()`` (NB2; its ``alpha`` is our
dispersion). With 300 rows and wide priors the three should agree to about a
tenth of a standard error (the NUTS dispersion is a posterior *mean*, a
little above the mode because its posterior is right-skewed). We print coefficients, standard errors, the
dispersion, and the incidence rate ratios ``exp(beta)``.

Run it from the repository root::

    python examples/nb_regression_with_offset.py

(with bayescount installed; from a source checkout use
``PYTHONPATH=. python examples/nb_regression_with_offset.py``).

It takes about 20-30 s on 2 cores, including nutpie's numba compile of the
NUTS model (measured with an empty pytensor compile cache). Set
``BAYESCOUNT_EXAMPLE_SKIP_NUTS=1`` to run only the MAP part.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pandas as pd
from statsmodels.discrete.discrete_model import NegativeBinomial

import bayescount as bc

SEED = 11
N_ROWS = 300
TRUE = {"Intercept": np.log(0.02), "x": 0.4, "smoker[T.yes]": 0.7}  # rate 2 per 100 person-years at baseline
TRUE_DISPERSION = 0.3


def simulate_cohort(rng: np.random.Generator) -> pd.DataFrame:
    x = rng.normal(0.0, 1.0, N_ROWS)
    smoker = rng.choice(["no", "yes"], N_ROWS, p=[0.6, 0.4])
    person_years = rng.uniform(50.0, 1000.0, N_ROWS)
    eta = np.log(person_years) + TRUE["Intercept"] + TRUE["x"] * x + TRUE["smoker[T.yes]"] * (smoker == "yes")
    mu = np.exp(eta)
    size = 1.0 / TRUE_DISPERSION  # numpy's NB(n, p) has mean n(1-p)/p and var mu + mu^2/n
    count = rng.negative_binomial(size, size / (size + mu))
    return pd.DataFrame({"count": count, "x": x, "smoker": smoker, "person_years": person_years})


def main() -> None:
    t_start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    df = simulate_cohort(rng)
    print(f"{len(df)} rows; counts: mean {df['count'].mean():.1f}, max {df['count'].max()}, "
          f"zeros {int((df['count'] == 0).sum())}; total person-years {df['person_years'].sum():.0f}")
    print(df.head().to_string(float_format=lambda v: f"{v:.3f}"))

    log_py = np.log(df["person_years"].to_numpy())
    data = bc.CountData.from_tidy(df, response="count", design="~ x + smoker", offset=log_py)
    coef = list(data.design.coef)
    print(f"\ndesign coefficients: {coef}")
    # The offset may equally be given as a column name:
    same = bc.CountData.from_tidy(df.assign(log_py=log_py), response="count", design="~ x + smoker", offset="log_py")
    assert np.allclose(same.offset, data.offset) and np.allclose(same.design.matrix, data.design.matrix)

    # --- statsmodels maximum likelihood (the reference) --------------------------------
    X = pd.DataFrame(data.design.matrix, columns=coef)
    y = data.counts[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter on its start values
        sm = NegativeBinomial(y, X, offset=log_py).fit(disp=0, maxiter=200)
    sm_est = pd.Series(sm.params.to_numpy(), index=coef + ["dispersion"])
    sm_se = pd.Series(sm.bse.to_numpy(), index=coef + ["dispersion"])
    print(f"statsmodels NegativeBinomial (NB2) ML fit converged: {sm.mle_retvals['converged']}")

    # --- bayescount MAP + Laplace --------------------------------------------------------
    columns = {"true": pd.Series({**TRUE, "dispersion": TRUE_DISPERSION}), "statsmodels": sm_est, "sm_se": sm_se}
    t0 = time.perf_counter()
    res_map = bc.fit(data, model="nb", method="map", random_seed=SEED)
    t_map = time.perf_counter() - t0
    lap = res_map.idata["laplace"]
    mode = lap["mode"].isel(gene=0).to_series()  # indexed by param: coef names + "log_dispersion"
    cov = lap["cov"].isel(gene=0).values
    sd = pd.Series(np.sqrt(np.diag(cov)), index=mode.index)
    map_est = pd.concat([mode[coef], pd.Series({"dispersion": np.exp(mode["log_dispersion"])})])
    # delta method for the dispersion's sd: d exp(u) = exp(u) du
    map_se = pd.concat([sd[coef], pd.Series({"dispersion": map_est["dispersion"] * sd["log_dispersion"]})])
    columns["map"], columns["map_sd"] = map_est, map_se
    print(f"MAP fit in {t_map:.1f} s")

    # --- bayescount NUTS -----------------------------------------------------------------
    if os.environ.get("BAYESCOUNT_EXAMPLE_SKIP_NUTS") != "1":
        t0 = time.perf_counter()
        res_nuts = bc.fit(data, model="nb", method="nuts", draws=500, tune=500, chains=2, random_seed=SEED)
        t_nuts = time.perf_counter() - t0
        post = res_nuts.idata["posterior"]
        beta = post["beta"].isel(gene=0)  # (chain, draw, coef)
        disp = post["dispersion"].isel(gene=0)
        nuts_est = pd.concat([beta.mean(("chain", "draw")).to_series()[coef],
                              pd.Series({"dispersion": float(disp.mean())})])
        nuts_sd = pd.concat([beta.std(("chain", "draw")).to_series()[coef],
                             pd.Series({"dispersion": float(disp.std())})])
        columns["nuts"], columns["nuts_sd"] = nuts_est, nuts_sd
        n_div = int(res_nuts.idata["sample_stats"]["diverging"].sum()) if "sample_stats" in res_nuts.idata.children else -1
        print(f"NUTS fit in {t_nuts:.1f} s with the {res_nuts.idata.attrs.get('nuts_sampler')} sampler "
              f"(2 chains x 500 draws; includes any one-off numba compile); divergences: {n_div}")
    else:
        print("NUTS skipped (BAYESCOUNT_EXAMPLE_SKIP_NUTS=1)")

    table = pd.DataFrame(columns)
    print("\nCoefficients (natural-log scale) and dispersion; *_sd = standard error / posterior sd")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))

    print("\nDifference from statsmodels in units of its standard error:")
    diffs = {m: (table[m] - table["statsmodels"]) / table["sm_se"] for m in ("map", "nuts") if m in table}
    print(pd.DataFrame(diffs).to_string(float_format=lambda v: f"{v:+.3f}"))

    irr = np.exp(table.loc[coef, [c for c in ("true", "statsmodels", "map", "nuts") if c in table]])
    if "nuts" in table:
        # The posterior mean of exp(beta) is not exp of the posterior mean; report it directly.
        irr["nuts E[exp(beta)]"] = np.exp(beta).mean(("chain", "draw")).to_series()[coef]
    irr.index = [f"{c} ({'baseline rate per person-year' if c == 'Intercept' else 'rate ratio'})" for c in coef]
    print("\nIncidence rate ratios exp(beta):")
    print(irr.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\ntotal time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
