"""Shared, session-scoped simulated data and fits: compilation dominates test time."""

import numpy as np
import pytest

import bayescount as bc

SEED = 20261121


@pytest.fixture(scope="session")
def sim_de():
    """2,000 genes, 6 vs 6, half the genes DE: the recovery/coverage data set."""
    return bc.simulate(n_genes=2000, n_per_group=6, frac_de=0.5, lfc_sd=1.5, random_seed=SEED)


@pytest.fixture(scope="session")
def map_fit(sim_de):
    return bc.fit(sim_de.data, model="nb_trend", method="map", random_seed=SEED)


@pytest.fixture(scope="session")
def advi_fit(sim_de):
    return bc.fit(sim_de.data, model="nb_trend", method="advi", random_seed=SEED, draws=400)


@pytest.fixture(scope="session")
def sim_small():
    """300 genes, 6 vs 6, for NUTS."""
    return bc.simulate(n_genes=300, n_per_group=6, frac_de=0.5, lfc_sd=1.5, random_seed=SEED + 1)


@pytest.fixture(scope="session")
def nuts_fit(sim_small):
    return bc.fit(sim_small.data, model="nb_trend", method="nuts", random_seed=SEED, draws=500, tune=500, chains=2)


def truth_for(sim, table):
    return sim.truth.loc[table.gene.to_numpy()]


def sign_correct(table, truth):
    return np.sign(table.log2fc.to_numpy()) == np.sign(truth.true_log2fc.to_numpy())
