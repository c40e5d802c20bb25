"""Observation weights: a weight of 2 is the observation twice, on the MAP path and in the PyMC model."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayescount as bc
from bayescount.cli import main


@pytest.fixture(scope="module")
def sim():
    return bc.simulate(n_genes=300, n_per_group=3, frac_de=0.2, random_seed=31)


def _duplicated(sim, twice):
    """The counts with the samples in ``twice`` appearing a second time."""
    extra = [f"{s}_copy" for s in twice]
    counts = pd.concat([sim.counts, sim.counts[twice].set_axis(extra, axis=1)], axis=1)
    samples = pd.concat([sim.samples, sim.samples.loc[twice].set_axis(extra)])
    return counts, samples


def test_weight_two_equals_the_sample_twice(sim):
    """Every sample doubled, so size factors and base means are unchanged by the duplication."""
    twice = list(sim.counts.columns)
    counts, samples = _duplicated(sim, twice)
    dup = bc.CountData.from_pandas(counts, samples, "~ group")
    weighted = bc.CountData.from_pandas(sim.counts, sim.samples, "~ group").with_weights(np.full(6, 2.0))
    np.testing.assert_allclose(weighted.base_mean, dup.base_mean)
    a = bc.fit(weighted, method="map", random_seed=1).lfc(["group", "B", "A"])
    b = bc.fit(dup, method="map", random_seed=1).lfc(["group", "B", "A"])
    hdi = ["hdi_low", "hdi_high"]
    pd.testing.assert_frame_equal(a.drop(columns=hdi), b.drop(columns=hdi), rtol=1e-6, atol=1e-9)
    # HDIs come from a 256-cell histogram: rounding can move an end by one cell.
    np.testing.assert_allclose(a[hdi], b[hdi], atol=0.03)


def test_unit_weights_change_nothing(sim):
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ group")
    a = bc.fit(data, method="map", random_seed=1).lfc()
    b = bc.fit(data.with_weights(np.ones(data.counts.shape)), method="map", random_seed=1).lfc()
    pd.testing.assert_frame_equal(a, b, rtol=1e-10, atol=1e-12)


def test_weighted_model_logp_equals_scipy(sim):
    data = bc.CountData.from_pandas(sim.counts.iloc[:20], sim.samples, "~ group")
    w = np.random.default_rng(0).uniform(0.2, 2.0, data.counts.shape)
    spec = bc.load_spec("nb_trend", {"coefficients": {"part": "normal_learned_scale"}})
    model = bc.build_model(spec, data.with_weights(w))
    point = model.initial_point()
    # Deterministics must be rewritten onto the value variables, or they are drawn afresh.
    outs = model.replace_rvs_by_values([model["beta"], model["dispersion"], model.potentials[-1]])
    beta, disp, term = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore",
                                        point_fn=True)(point)
    mu = np.exp(data.offset[None, :] + beta @ data.design.matrix.T)
    size = 1.0 / disp[:, None]
    assert term == pytest.approx(np.sum(w * stats.nbinom.logpmf(data.counts, size, size / (size + mu))), rel=1e-10)


@pytest.mark.parametrize("weights, message", [
    ("nope", "not in the sample table"),
    (np.array([1.0, -1, 1, 1, 1, 1]), ">= 0"),
    (np.ones(4), "one per sample"),
])
def test_bad_weights(sim, weights, message):
    data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ group")
    with pytest.raises(bc.InputError, match=message):
        data.with_weights(weights)


def test_cli_weights_column(sim, tmp_path):
    samples = sim.samples.assign(quality=[1.0, 0.5, 1.0, 1.0, 0.8, 1.0])
    sim.counts.to_csv(tmp_path / "c.csv")
    samples.to_csv(tmp_path / "s.csv")
    out = tmp_path / "r.csv"
    rc = main(["fit", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group",
               "--weights", "quality", "--out", str(out), "--seed", "1", "--quiet"])
    assert rc == 0 and len(pd.read_csv(out)) == 300
    rc = main(["fit", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group",
               "--weights", "group", "--out", str(tmp_path / "x.csv"), "--quiet"])
    assert rc == 2 and not (tmp_path / "x.csv").exists()
