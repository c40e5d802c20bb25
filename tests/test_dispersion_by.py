"""Group-specific dispersion (``dispersion_by``) and the evidence comparison that says whether it is warranted."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescount as bc
from bayescount.model import layout
from bayescount.newton import GeneProblem
from conftest import assert_derivatives_match

SEED = 7311
RATIO = 8.0


def _unbalanced(ratio, random_seed):
    """No DE; group A 10 samples, group B 4 samples with ``ratio`` times A's dispersion in every gene."""
    sim = bc.simulate(n_genes=1000, n_per_group=10, frac_de=0.0, dispersion_ratio=ratio, random_seed=random_seed)
    keep = list(sim.samples.index[sim.samples.group == "A"]) + list(sim.samples.index[sim.samples.group == "B"][:4])
    return sim, bc.CountData.from_pandas(sim.counts[keep], sim.samples.loc[keep], design="~ group")


@pytest.fixture(scope="module")
def noisy_b():
    sim, data = _unbalanced(RATIO, SEED)
    fits = {"shared": bc.fit(data, random_seed=SEED), "by_group": bc.fit(data, random_seed=SEED, dispersion_by="group")}
    return sim, data, fits


@pytest.fixture(scope="module")
def equal():
    sim, data = _unbalanced(1.0, SEED + 1)
    fits = {"shared": bc.fit(data, random_seed=SEED), "by_group": bc.fit(data, random_seed=SEED, dispersion_by="group")}
    return sim, data, fits


def test_shared_dispersion_inflates_calls_and_per_group_dispersion_does_not(noisy_b):
    """The DESeq2 support-thread setting: a small, noisier group. One dispersion per gene, fitted mostly
    from the quiet group, makes the noisy group's spread look like an effect; per-group dispersion
    keeps null calls at svalue < 0.05 at most 0.5% of genes."""
    _, data, fits = noisy_b
    shared = fits["shared"].lfc()
    by_group = fits["by_group"].lfc()
    assert (shared.svalue < 0.05).mean() > 0.03
    assert (by_group.svalue < 0.05).mean() <= 0.005
    # Wald p-values of the Laplace fit: near their nominal rate with per-group dispersion only.
    assert (shared.pvalue < 0.01).mean() > 0.05
    assert (by_group.pvalue < 0.01).mean() < 0.03


def test_trend_shift_and_trend_recovered(noisy_b):
    sim, _, fits = noisy_b
    hyper = fits["by_group"].hyper
    assert hyper["disp_shift"][0] == pytest.approx(np.log(RATIO), abs=0.3)
    assert hyper["a0"] == pytest.approx(sim.params["a0"], rel=0.3)
    assert hyper["a1"] == pytest.approx(sim.params["a1"], rel=0.35)
    assert hyper["sigma_d"] == pytest.approx(sim.params["sigma_d"], abs=0.15)
    genes = fits["by_group"].gene_summary()
    high = sim.truth.loc[genes.gene, "true_base_mean"].to_numpy() > 30
    ratio = np.log(genes["dispersion[B]"] / genes["dispersion[A]"]).to_numpy()
    assert np.median(ratio[high]) == pytest.approx(np.log(RATIO), abs=0.35)
    # The overall column averages the levels over the samples (10 A, 4 B).
    np.testing.assert_allclose(genes["dispersion"], (10 * genes["dispersion[A]"] + 4 * genes["dispersion[B]"]) / 14)


def test_evidence_prefers_per_group_dispersion_only_when_it_is_there(noisy_b, equal):
    genes, overall = bc.compare_evidence(noisy_b[2])
    assert overall.model.iloc[0] == "by_group" and overall["diff"].iloc[1] > 100
    assert (genes.preferred == "by_group").mean() > 0.3
    assert (genes.preferred == "shared").mean() < 0.01
    genes, overall = bc.compare_evidence(equal[2])
    assert overall.model.iloc[0] == "shared"
    assert (genes.preferred == "by_group").mean() < 0.01
    assert abs(equal[2]["by_group"].hyper["disp_shift"][0]) < 0.2


def test_compare_evidence_refuses_other_data_and_sampler_fits(noisy_b, equal):
    with pytest.raises(bc.InputError, match="same counts"):
        bc.compare_evidence({"a": noisy_b[2]["shared"], "b": equal[2]["shared"]})
    with pytest.raises(bc.InputError, match="two or more"):
        bc.compare_evidence({"a": noisy_b[2]["shared"]})


def test_model_logp_with_per_level_dispersion_equals_scipy(noisy_b):
    _, data, _ = noisy_b
    small = data.subset_genes(np.arange(20)).with_dispersion_by("group")
    model = bc.build_model(bc.load_spec("nb_trend"), small)
    assert model["log_dispersion"].type.ndim == 2
    outs = [model.logp(vars=[model["counts"]]), *model.replace_rvs_by_values([model["beta"], model["dispersion"]])]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    rng = np.random.default_rng(0)
    codes = small.dispersion_groups.codes
    for _ in range(2):
        point = {k: v + rng.normal(0, 0.5, size=np.shape(v)) for k, v in model.initial_point().items()}
        logp, beta, disp = fn(point)
        mu = np.exp(small.offset[None, :] + beta @ small.design.matrix.T)
        size = 1.0 / disp[:, codes]
        ref = stats.nbinom.logpmf(small.counts, size, size / (size + mu)).sum()
        assert logp == pytest.approx(ref, rel=1e-10)


def test_map_derivatives_with_per_level_dispersion(noisy_b):
    """Gradient and Hessian of the batched per-gene problem (one-hot level blocks) against finite differences."""
    _, data, _ = noisy_b
    small = data.subset_genes(np.arange(25)).with_dispersion_by("group")
    spec = bc.load_spec("zinb_trend")
    lay = layout(spec, small)
    assert lay.names[-3:] == ("log_dispersion[A]", "log_dispersion[B]", "logit_zero")
    prob = GeneProblem(spec, small, lay)
    rng = np.random.default_rng(4)
    G = small.n_genes
    theta = np.column_stack([np.log(small.base_mean + 1), rng.normal(0, 0.5, G), rng.normal(-2, 0.5, (G, 2)),
                             rng.normal(-2, 0.5, G)])
    rows = np.arange(G)
    mu = np.exp(small.offset[None, :] + theta[:, :2] @ small.design.matrix.T)
    size = np.exp(-theta[:, 2:4])[:, small.dispersion_groups.codes]
    pi = 1 / (1 + np.exp(-theta[:, 4:5]))
    nb = stats.nbinom.pmf(small.counts, size, size / (size + mu))
    ref = np.log(np.where(small.counts == 0, pi, 0) + (1 - pi) * nb).sum(axis=1)
    np.testing.assert_allclose(prob.loglik(theta, rows), ref, rtol=1e-9)
    assert_derivatives_match(prob, theta)


@pytest.mark.parametrize("column, message", [
    ("nope", "not in the sample table"),
    ("one", "one level"),
    ("lonely", "fewer than 2 samples"),
])
def test_bad_dispersion_by(noisy_b, column, message):
    _, data, _ = noisy_b
    samples = data.samples.assign(one="x", lonely=["u"] + ["v"] * (data.n_obs - 1))
    data = bc.CountData.from_pandas(pd.DataFrame(data.counts, index=data.genes, columns=data.obs), samples,
                                    design="~ group")
    with pytest.raises(bc.InputError, match=message):
        data.with_dispersion_by(column)


def test_poisson_refuses_dispersion_by(noisy_b):
    with pytest.raises(bc.InputError, match="no dispersion"):
        bc.fit(noisy_b[1], model="poisson", dispersion_by="group")


def test_cli_dispersion_by_and_reload(noisy_b, tmp_path, capsys):
    from bayescount.cli import main

    _, data, _ = noisy_b
    pd.DataFrame(data.counts[:200], index=data.genes[:200], columns=data.obs).to_csv(tmp_path / "counts.csv")
    data.samples.to_csv(tmp_path / "samples.csv")
    args = ["fit", str(tmp_path / "counts.csv"), "--samples", str(tmp_path / "samples.csv"), "--design", "~ group",
            "--quiet", "--seed", "3"]
    rc = main(args + ["--dispersion-by", "group", "--out", str(tmp_path / "res.csv"), "--save", str(tmp_path / "fit.nc")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "res.csv")
    assert {"dispersion[A]", "dispersion[B]", "dispersion"} <= set(table.columns)
    loaded = bc.Fit.load(tmp_path / "fit.nc")
    assert loaded.idata.attrs["dispersion_by"] == "group"
    np.testing.assert_allclose(loaded.gene_summary()["dispersion[B]"], table["dispersion[B]"])
    capsys.readouterr()
    rc = main(args + ["--dispersion-by", "nope", "--out", str(tmp_path / "bad.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "nope" in err
    assert not (tmp_path / "bad.csv").exists()
