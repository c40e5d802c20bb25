"""The result type: contrasts, attrs, save/load integrity, log-likelihood."""

import json

import numpy as np
import pytest

import bayescount as bc


@pytest.fixture(scope="module")
def two_factor():
    sim = bc.simulate(n_genes=300, n_per_group=4, random_seed=4)
    samples = sim.samples.assign(batch=["x", "y"] * 4)
    data = bc.CountData.from_pandas(sim.counts, samples, design="~ batch + group")
    return data, bc.fit(data, method="map", random_seed=3, log_likelihood=True)


def test_contrast_forms_agree(two_factor):
    data, res = two_factor
    by_factor = res.lfc(["group", "B", "A"])
    by_name = res.lfc("group[T.B]")
    by_vector = res.lfc([0, 0, 1])
    for other in (by_name, by_vector):
        np.testing.assert_allclose(other.log2fc, by_factor.log2fc)
        np.testing.assert_allclose(other.hdi_high, by_factor.hdi_high)
    flipped = res.lfc(["group", "A", "B"])
    np.testing.assert_allclose(flipped.log2fc, -by_factor.log2fc)
    np.testing.assert_allclose(flipped.lfsr, by_factor.lfsr, rtol=1e-7, atol=1e-12)
    # An arbitrary linear combination: half the group effect plus the batch effect.
    # Posterior means are linear in the contrast, whatever the prior.
    combo = res.lfc([0, 1, 0.5])
    expect = res.lfc([0, 1, 0]).log2fc + 0.5 * res.lfc([0, 0, 1]).log2fc
    np.testing.assert_allclose(combo.log2fc, expect, rtol=1e-10, atol=1e-12)
    with pytest.raises(bc.InputError, match="several coefficients"):
        res.lfc()
    with pytest.raises(bc.InputError, match="unknown coefficient"):
        res.lfc("group[T.C]")
    with pytest.raises(bc.InputError, match="no level 'C'"):
        res.lfc(["group", "C", "A"])
    with pytest.raises(bc.InputError, match="length 2"):
        res.lfc([1, 0])


def test_table_columns_and_attrs(two_factor):
    data, res = two_factor
    table = res.lfc("group[T.B]", hdi_prob=0.8)
    assert list(table.columns) == ["gene", "base_mean", "log2fc", "log2fc_sd", "hdi_low", "hdi_high", "lfsr",
                                   "svalue", "dispersion", "flag", "pvalue", "padj"]
    # With a spike-and-slab posterior the mean can sit outside an HDI that hugs the spike,
    # so check what an HDI promises: it holds the requested posterior mass, with little to spare.
    assert np.all(table.hdi_low < table.hdi_high)
    from scipy import stats

    lap = res.idata["laplace"]
    k = list(res.idata["constant_data"]["coef"].values).index("group[T.B]")
    m = lap["mix_mode"].values[..., k] / np.log(2)
    s = np.sqrt(lap["mix_cov"].values[..., k, k]) / np.log(2)
    w = lap["mix_weight"].values
    lo, hi = table.hdi_low.to_numpy()[:, None], table.hdi_high.to_numpy()[:, None]
    inside = np.sum(w * (stats.norm.cdf((hi - m) / s) - stats.norm.cdf((lo - m) / s)), axis=1)
    assert np.all(inside >= 0.8 - 0.01)
    assert np.median(inside) < 0.86
    # ash's lfsr counts the null component against both signs, so it ranges over [0, 1].
    assert np.all((table.lfsr >= 0) & (table.lfsr <= 1)) and np.all(table.svalue <= table.lfsr + 1e-12)
    attrs = res.idata.attrs
    assert attrs["spec_hash"] == bc.load_spec("nb_trend").hash
    assert json.loads(attrs["spec"])["name"] == "nb_trend"
    assert attrs["random_seed"] == 3 and attrs["method"] == "map"
    assert {"pymc", "pytensor", "arviz", "bayescount"} <= set(json.loads(attrs["versions"]))
    ll = res.idata["log_likelihood"]["counts"]
    assert ll.dims == ("chain", "draw", "gene", "obs") and ll.shape[2:] == data.counts.shape
    assert "sample" not in res.idata["posterior"].dims


def test_save_load_round_trip_and_tamper(two_factor, tmp_path):
    _, res = two_factor
    path = tmp_path / "fit.nc"
    res.save(path)
    back = bc.Fit.load(path)
    np.testing.assert_allclose(back.lfc("group[T.B]").log2fc, res.lfc("group[T.B]").log2fc)
    assert back.spec.hash == res.spec.hash and back.random_seed == 3
    import xarray as xr

    tree = xr.open_datatree(path, engine="h5netcdf").load()
    tree.attrs["spec"] = tree.attrs["spec"].replace('"sigma": 10.0', '"sigma": 11.0')
    tree.to_netcdf(tmp_path / "tampered.nc", engine="h5netcdf")
    with pytest.raises(bc.ResultIntegrityError, match="hash"):
        bc.Fit.load(tmp_path / "tampered.nc")
    del tree.attrs["complete"]
    tree.attrs["spec"] = res.idata.attrs["spec"]
    tree.to_netcdf(tmp_path / "partial.nc", engine="h5netcdf")
    with pytest.raises(bc.ResultIntegrityError, match="incomplete"):
        bc.Fit.load(tmp_path / "partial.nc")


def test_same_seed_same_draws():
    sim = bc.simulate(n_genes=100, n_per_group=3, random_seed=8)
    a = bc.fit(sim.data, method="map", random_seed=5)
    b = bc.fit(sim.data, method="map", random_seed=5)
    np.testing.assert_allclose(a.idata["posterior"]["beta"].values, b.idata["posterior"]["beta"].values)


def test_map_draws_made_on_first_access_are_those_of_an_eager_fit():
    """The MAP posterior is made when idata is first read; answers and draws do not depend on when."""
    import pickle

    sim = bc.simulate(n_genes=150, n_per_group=3, random_seed=9)
    eager = bc.fit(sim.data, method="map", random_seed=6, log_likelihood=True)  # draws made in fit
    lazy = bc.fit(sim.data, method="map", random_seed=6)
    assert lazy.has_group("posterior") and "posterior" not in lazy._idata.children
    table = lazy.lfc()
    assert lazy.hyper.keys() == eager.hyper.keys()
    assert json.loads(lazy.attrs["timings"])["n_threads"] >= 1 and lazy.attrs["random_seed"] == 6
    assert bool(lazy.group("map_stats")["converged"].values.all()) == bool(eager.group("map_stats")["converged"].values.all())
    assert "posterior" not in lazy._idata.children  # the table, genes, hyperparameters, attrs and groups need no draws
    copy = pickle.loads(pickle.dumps(lazy))  # pickling makes them
    assert list(lazy.idata.children)[0] == "posterior"
    for name in ("beta", "dispersion", "sigma_d"):
        np.testing.assert_array_equal(lazy.idata["posterior"][name].values, eager.idata["posterior"][name].values)
        np.testing.assert_array_equal(copy.idata["posterior"][name].values, eager.idata["posterior"][name].values)
    for name, value in eager.hyper.items():
        np.testing.assert_allclose(lazy.hyper[name], value, rtol=1e-12)
    pd_tab = eager.lfc()
    np.testing.assert_allclose(table.drop(columns=["gene", "flag"]).to_numpy(float),
                               pd_tab.drop(columns=["gene", "flag"]).to_numpy(float), rtol=1e-12)
    assert "laplace_draws" in json.loads(lazy.idata.attrs["timings"])
