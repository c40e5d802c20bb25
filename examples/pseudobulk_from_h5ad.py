"""Single-cell counts in an .h5ad file: pseudobulk per donor and cell type, then DE per cell type.

We build a small AnnData file the way real ones look: raw counts in a sparse
layer ``counts``, log-normalized values in ``X``, and an ``obs`` table with
``donor``, ``cell_type`` and the donor-level ``condition``. The cells come from
known donor-level counts (``bc.simulate``: 500 genes, 4 vs 4 donors, 10% DE)
split at random over each donor's cells, so the pseudobulk sums are known.

``bc.pseudobulk(path, donor="donor", cell_type="cell_type", layer="counts",
design="~ condition")`` reads the layer a block of cells at a time and returns
one CountData per cell type (samples = donors, with ``n_cells``); each is fitted
with ``nb_trend`` by MAP. Both cell types are split from the same donor counts,
so their pseudobulk tables, and hence their DE tables, agree exactly: nothing is
lost between the cells and the sums. The same in one command::

    bayescount fit cells.h5ad --layer counts --pseudobulk-by donor,cell_type --design "~ condition"

Run from the repository root (needs the ``anndata`` extra)::

    python examples/pseudobulk_from_h5ad.py

Takes about 10 s warm.
"""

import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

import bayescount as bc


def make_h5ad(path: Path, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sim = bc.simulate(n_genes=500, n_per_group=4, frac_de=0.1, random_seed=seed)
    blocks, obs = [], []
    for cell_type, n_cells in (("T", 200), ("B", 60)):
        for j, donor in enumerate(sim.counts.columns):
            totals = sim.counts.iloc[:, j].to_numpy()
            cells = np.stack([rng.multinomial(t, np.full(n_cells, 1 / n_cells)) for t in totals], axis=1)
            blocks.append(sparse.csr_matrix(cells))
            condition = "treated" if sim.samples.loc[donor, "group"] == "B" else "control"
            obs += [{"donor": donor, "cell_type": cell_type, "condition": condition}] * n_cells
    counts = sparse.vstack(blocks).tocsr().astype(np.float32)
    obs = pd.DataFrame(obs, index=[f"cell{i}" for i in range(counts.shape[0])])
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=sim.counts.index))
    adata.layers["counts"] = counts
    adata.X.data = np.log1p(adata.X.data)  # what most files keep in X
    adata.write_h5ad(path)
    print(f"wrote {path.name}: {adata.n_obs} cells x {adata.n_vars} genes, {counts.nnz} non-zeros")
    return sim.truth


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.h5ad"
        truth = make_h5ad(path)
        by_type = bc.pseudobulk(path, donor="donor", cell_type="cell_type", layer="counts", design="~ condition")
        for cell_type, data in by_type.items():
            print(f"\ncell type {cell_type}: {data.n_genes} genes x {data.n_obs} donors")
            print(data.samples.to_string())
            res = bc.fit(data, model="nb_trend", method="map", random_seed=1)
            table = res.lfc(["condition", "treated", "control"])
            hits = table.svalue < 0.1
            right = truth.loc[table.gene[hits], "is_de"].to_numpy()
            print(f"calls at svalue < 0.1: {int(hits.sum())} ({int(right.sum())} truly DE; "
                  f"{int(truth.is_de.sum())} DE genes simulated)")


if __name__ == "__main__":
    main()
