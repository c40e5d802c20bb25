"""NUTS back ends: numpyro (JAX) against the MAP path on the same data, and clear errors."""

import importlib
import importlib.util

import numpy as np
import pytest
from arviz_stats.base import array_stats

import bayescount as bc
from bayescount.errors import InputError


def test_unknown_or_missing_nuts_sampler_is_a_clear_error(monkeypatch):
    sim = bc.simulate(n_genes=5, n_per_group=2, random_seed=1)
    with pytest.raises(InputError, match="unknown nuts_sampler 'stan'"):
        bc.fit(sim.data, method="nuts", nuts_sampler="stan")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.import_module("bayescount.fit"), "find_spec", lambda name: None if name == "numpyro" else real(name))
    with pytest.raises(InputError, match=r'needs numpyro.*pip install "bayescount\[jax\]"'):
        bc.fit(sim.data, method="nuts", nuts_sampler="numpyro")


@pytest.mark.slow
def test_numpyro_nuts_agrees_with_map_and_truth():
    pytest.importorskip("numpyro")
    sim = bc.simulate(n_genes=80, n_per_group=4, frac_de=0.3, lfc_sd=1.5, random_seed=21)
    nuts = bc.fit(sim.data, method="nuts", nuts_sampler="numpyro", draws=400, tune=400, chains=2, random_seed=3)
    assert nuts.idata.attrs["nuts_sampler"] == "numpyro"
    beta = nuts.idata["posterior"]["beta"].transpose("chain", "draw", "gene", "coef").to_numpy()
    rhat = array_stats.rhat(beta, chain_axis=0, draw_axis=1)
    # Intercepts mix slowest (they carry the trend's a0, a1); 400 draws x 2 chains keep the test short.
    assert np.nanmax(rhat) < 1.1
    a = nuts.lfc(["group", "B", "A"]).set_index("gene")
    b = bc.fit(sim.data, method="map", random_seed=3).lfc(["group", "B", "A"]).set_index("gene").loc[a.index]
    # Two independent routes to the same posterior: full-Bayes NUTS and MAP + quadrature/Laplace.
    assert np.corrcoef(a.log2fc, b.log2fc)[0, 1] > 0.98
    assert np.median(np.abs(a.log2fc - b.log2fc) / a.log2fc_sd) < 0.2
    truth = sim.truth.loc[a.index, "true_log2fc"]
    assert np.corrcoef(a.log2fc, truth)[0, 1] > 0.9
