"""AnnData input and pseudobulk: cells split from known donor counts sum back exactly."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import bayescount as bc
from bayescount.cli import main
from bayescount.singlecell import pseudobulk, read_cells

ad = pytest.importorskip("anndata")


def split_into_cells(sim, cell_types=("T", "B"), cells_per=(30, 10), seed=0):
    """Cells whose sums per (donor, cell type) are known: each donor's counts are split
    multinomially over its cells; the B cells get the same counts scaled by 2."""
    rng = np.random.default_rng(seed)
    counts = sim.counts.to_numpy()  # genes x donors
    blocks, obs, truth = [], [], {}
    for ct, n_cells, scale in zip(cell_types, cells_per, (1, 2)):
        for j, donor in enumerate(sim.counts.columns):
            total = counts[:, j] * scale
            cells = np.stack([rng.multinomial(t, np.full(n_cells, 1 / n_cells)) for t in total], axis=1)
            blocks.append(cells)  # cells x genes
            obs += [{"donor": donor, "cell_type": ct, "group": sim.samples.loc[donor, "group"],
                     "qc": rng.normal()} for _ in range(n_cells)]
            truth[(ct, donor)] = total
    X = np.concatenate(blocks, axis=0).astype(np.float32)
    obs = pd.DataFrame(obs, index=[f"cell{i}" for i in range(len(obs))])
    obs["cell_type"] = obs["cell_type"].astype("category")
    var = pd.DataFrame(index=sim.counts.index)
    return X, obs, var, truth


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    sim = bc.simulate(n_genes=150, n_per_group=4, random_seed=8)
    X, obs, var, truth = split_into_cells(sim)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = sparse.csr_matrix(X)
    adata.X = np.log1p(X)  # X is normalized, as in most real files: the counts live in a layer
    path = tmp_path_factory.mktemp("sc") / "cells.h5ad"
    adata.write_h5ad(path)
    return sim, adata, path, truth


def test_pseudobulk_sums_cells_exactly(cells):
    sim, adata, path, truth = cells
    by_ct = pseudobulk(path, donor="donor", cell_type="cell_type", design="~ group", layer="counts",
                       chunk_cells=37)
    assert sorted(by_ct) == ["B", "T"]
    for ct, data in by_ct.items():
        frame = pd.DataFrame(data.counts, index=data.genes, columns=data.obs)
        for donor in data.obs:
            np.testing.assert_array_equal(frame[donor].to_numpy(),
                                          pd.Series(truth[(ct, donor)], index=sim.counts.index).loc[data.genes])
        assert data.samples["n_cells"].tolist() == [30 if ct == "T" else 10] * 8
        # Donor-level columns are kept; a per-cell column (qc) is not.
        assert "group" in data.samples.columns and "qc" not in data.samples.columns


def test_pseudobulk_fit_equals_fit_of_the_donor_counts(cells):
    sim, adata, path, _ = cells
    data = pseudobulk(adata, donor="donor", cell_type="cell_type", design="~ group", layer="counts")["T"]
    direct = bc.CountData.from_pandas(sim.counts, sim.samples, "~ group")
    a = bc.fit(data, method="map", random_seed=3).lfc(["group", "B", "A"])
    b = bc.fit(direct, method="map", random_seed=3).lfc(["group", "B", "A"])
    pd.testing.assert_frame_equal(a.drop(columns="flag"), b.drop(columns="flag"), rtol=1e-8)


def test_sparse_layer_and_dense_x_read_the_same(cells):
    _, adata, path, _ = cells
    dense = ad.AnnData(X=adata.layers["counts"].toarray(), obs=adata.obs, var=adata.var)
    small = ["T"]
    keep = adata.obs.cell_type.isin(small).to_numpy()
    from_layer = read_cells(adata[keep], design="~ group", layer="counts")
    from_dense = read_cells(dense[keep], design="~ group")
    from_file = read_cells(path, design="~ group", layer="counts", chunk_cells=50)
    np.testing.assert_array_equal(from_layer.counts, from_dense.counts)
    assert from_file.n_obs == adata.n_obs and from_file.counts.sum() == adata.layers["counts"].sum()


def test_normalized_x_is_refused(cells):
    _, adata, path, _ = cells
    with pytest.raises(bc.InputError, match="non-integer"):
        pseudobulk(path, donor="donor", design="~ group")
    with pytest.raises(bc.InputError, match="layer 'raw' not found"):
        pseudobulk(path, donor="donor", design="~ group", layer="raw")
    with pytest.raises(bc.InputError, match="no column 'patient'"):
        pseudobulk(path, donor="patient", design="~ group", layer="counts")


def test_cli_pseudobulk_by_cell_type(cells, tmp_path, capsys):
    _, _, path, _ = cells
    out = tmp_path / "res.csv"
    rc = main(["fit", str(path), "--design", "~ group", "--layer", "counts", "--pseudobulk-by", "donor,cell_type",
               "--out", str(out), "--save", str(tmp_path / "fit.nc"), "--seed", "1", "--quiet"])
    assert rc == 0
    table = pd.read_csv(out)
    assert table.columns[0] == "cell_type" and set(table.cell_type) == {"B", "T"}
    assert (tmp_path / "fit.B.nc").exists() and (tmp_path / "fit.T.nc").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "non-integer"),
    (["--layer", "counts", "--samples", "s.csv"], "--samples is not used"),
    (["--layer", "counts", "--pseudobulk-by", "donor,cell_type,x"], "DONOR or DONOR,CELL_TYPE"),
])
def test_cli_h5ad_bad_input(cells, tmp_path, capsys, extra, message):
    _, _, path, _ = cells
    out = tmp_path / "res.csv"
    rc = main(["fit", str(path), "--design", "~ group", "--out", str(out), "--quiet", *extra]
              + ([] if "--pseudobulk-by" in extra else ["--pseudobulk-by", "donor"]))
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pseudo_replication_cells_inflate_pseudobulk_does_not():
    """4 vs 4 donors, 250 cells each, donor effects, no condition effect (Squair et al. 2021).

    Treating cells as replicates calls most genes; summing per donor keeps calls at or
    below the nominal rate, and so does ``nb_donor`` on the cells with ``(1|donor)``.
    """
    sim = bc.simulate_cells(n_genes=150, n_donors_per_group=4, cells_per_donor=250, donor_sd=0.3, random_seed=11)
    cell_level = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition", size_factors="poscounts")
    cells = bc.fit(cell_level, method="map", random_seed=1).lfc(["condition", "B", "A"])
    adata = ad.AnnData(X=sim.counts.T.to_numpy(dtype=float), obs=sim.samples, var=pd.DataFrame(index=sim.counts.index))
    donors = pseudobulk(adata, donor="donor", design="~ condition")["all"]
    assert donors.samples["n_cells"].tolist() == [250] * 8
    bulk = bc.fit(donors, method="map", random_seed=1).lfc(["condition", "B", "A"])
    mixed_data = bc.CountData.from_pandas(sim.counts, sim.samples, "~ condition + (1|donor)", size_factors="poscounts")
    mixed_fit = bc.fit(mixed_data, model="nb_donor", method="map", random_seed=1)
    mixed = mixed_fit.lfc(["condition", "B", "A"])
    assert (cells.svalue < 0.05).mean() > 0.2
    assert (bulk.svalue < 0.05).mean() <= 0.05
    assert (mixed.svalue < 0.05).mean() <= 0.05
    # The donor sd is recovered (truth 0.3 for every gene).
    assert abs(np.median(mixed_fit.random_effects().re_sd) - 0.3) < 0.05
