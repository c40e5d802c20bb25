"""Recovery of known truth from the simulator on every fit path."""

import numpy as np
import pytest

import bayescount as bc
from conftest import SEED, truth_for


def lfc_corr(sim, fit):
    table = fit.lfc(["group", "B", "A"])
    truth = truth_for(sim, table)
    keep = truth.true_base_mean.to_numpy() >= 10
    return np.corrcoef(table.log2fc.to_numpy()[keep], truth.true_log2fc.to_numpy()[keep])[0, 1]


def test_map_recovers_lfc_and_trend(sim_de, map_fit):
    assert lfc_corr(sim_de, map_fit) >= 0.95
    h = map_fit.hyper
    # Truth: a0=0.05, a1=1, sigma_d=0.5; half the genes have no change.
    assert 0.04 <= h["a0"] <= 0.06
    assert 0.6 <= h["a1"] <= 1.5
    assert abs(h["sigma_d"] - 0.5) <= 0.05
    # The near-null component of the LFC scale mixture carries about the null fraction.
    assert abs(h["pi"][0] - 0.5) <= 0.1
    disp = map_fit.lfc().dispersion.to_numpy()
    true_disp = truth_for(sim_de, map_fit.lfc()).true_dispersion.to_numpy()
    assert np.corrcoef(np.log(disp), np.log(true_disp))[0, 1] >= 0.8


@pytest.mark.parametrize("sigma_d", [0.25, 0.8])
def test_map_recovers_known_sigma_d(sigma_d):
    """The dispersion scatter comes from a marginal criterion, so it does not collapse."""
    sim = bc.simulate(n_genes=2000, n_per_group=6, sigma_d=sigma_d, random_seed=SEED + 7)
    h = bc.fit(sim.data, method="map", random_seed=1).hyper
    # The joint mode would put sigma_d near 0; the quadrature marginal lands within 10%.
    assert abs(h["sigma_d"] / sigma_d - 1) <= 0.1


@pytest.mark.slow
def test_advi_recovers_lfc(sim_de, advi_fit):
    assert lfc_corr(sim_de, advi_fit) >= 0.95
    assert advi_fit.idata.attrs["advi_converged"] == 1


@pytest.mark.slow
def test_nuts_recovers_lfc_and_trend(sim_small, nuts_fit):
    assert lfc_corr(sim_small, nuts_fit) >= 0.95
    h = nuts_fit.hyper
    assert 0.02 <= h["a0"] <= 0.1
    assert 0.2 <= h["sigma_d"] <= 0.8
    stats = nuts_fit.idata["sample_stats"]
    assert int(stats["diverging"].sum()) <= 5
