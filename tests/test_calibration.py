"""Null calibration and interval coverage."""

import numpy as np
import pytest

import bayescount as bc
from conftest import SEED, truth_for


@pytest.mark.parametrize("n_per_group", [3, 6])
def test_null_calls_are_rare(n_per_group):
    sim = bc.simulate(n_genes=2000, n_per_group=n_per_group, frac_de=0.0, random_seed=SEED + n_per_group)
    table = bc.fit(sim.data, method="map", random_seed=1).lfc()
    assert (table.svalue < 0.05).mean() <= 0.005
    assert (table.padj < 0.05).mean() <= 0.005


def coverage(sim, fit, prob=0.9):
    table = fit.lfc(["group", "B", "A"], hdi_prob=prob)
    truth = truth_for(sim, table).true_log2fc.to_numpy()
    return np.mean((table.hdi_low.to_numpy() <= truth) & (truth <= table.hdi_high.to_numpy()))


def test_map_interval_coverage(sim_de, map_fit):
    assert 0.85 <= coverage(sim_de, map_fit) <= 0.95


@pytest.mark.slow
def test_nuts_interval_coverage(sim_small, nuts_fit):
    assert 0.85 <= coverage(sim_small, nuts_fit) <= 0.95


@pytest.mark.xfail(
    strict=True,
    reason="known defect: the MAP path plugs in each gene's shrunken dispersion; genes whose dispersion lies "
    "above the trend get too-narrow LFC posteriors, so s-value calls run above nominal (false-sign "
    "rate ~0.24 at svalue<0.1 here). Needs integration over the log-dispersion (quadrature).",
)
def test_svalue_calls_control_false_signs(sim_de, map_fit):
    table = map_fit.lfc(["group", "B", "A"])
    truth = truth_for(sim_de, table)
    calls = table.svalue.to_numpy() < 0.1
    wrong = calls & ~(truth.is_de.to_numpy() & (np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy())))
    assert calls.sum() > 200
    assert wrong.sum() / calls.sum() <= 0.1
