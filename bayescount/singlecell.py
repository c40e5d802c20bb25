"""Single-cell input: AnnData (.h5ad) counts read in chunks of cells, and pseudobulk sums.

The count matrix of an ``.h5ad`` file (``X`` or a named layer, dense or CSR/CSC
sparse) is read a block of cells at a time straight from the HDF5 file, so a
pseudobulk of millions of cells never holds more than one block in memory.
Cells are summed by (donor, cell type) with a sparse indicator product; the
result is one :class:`~bayescount.data.CountData` per cell type whose sample
table keeps the donor-level columns and the number of cells per sample
(``n_cells``), which is what pseudobulk DE needs (Squair et al. 2021).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from .data import CountData
from .errors import InputError

log = logging.getLogger(__name__)

CHUNK_CELLS = 20_000


class CellMatrix:
    """A cells x genes count matrix in an ``.h5ad`` file or an in-memory AnnData.

    Parameters
    ----------
    source : str, Path or anndata.AnnData
    layer : str, optional
        A layer name; default ``X``.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> a = ad.AnnData(np.array([[1, 0], [2, 3]], dtype=float),
    ...                obs=pd.DataFrame(index=["c1", "c2"]), var=pd.DataFrame(index=["g1", "g2"]))
    >>> m = CellMatrix(a)
    >>> m.shape, [b.sum() for _, b in m.blocks()]
    ((2, 2), [np.float64(6.0)])
    """

    def __init__(self, source, layer: str | None = None):
        self.layer = layer
        self._file = None
        try:
            import anndata
            from anndata.io import read_elem, sparse_dataset
        except ImportError:  # pragma: no cover - the extra is declared
            raise InputError("reading .h5ad needs anndata: pip install 'bayescount[anndata]'") from None
        if isinstance(source, anndata.AnnData):
            mat = source.X if layer is None else self._layer(source.layers, layer)
            self.obs, self.var_names = source.obs.copy(), pd.Index(source.var_names.astype(str))
            self._matrix = mat
        else:
            import h5py

            path = Path(source)
            if not path.is_file():
                raise InputError(f"AnnData file {str(path)!r} does not exist")
            try:
                self._file = h5py.File(path, "r")
            except OSError as exc:
                raise InputError(f"cannot read {str(path)!r} as .h5ad (HDF5): {exc}") from None
            f = self._file
            if "obs" not in f or "var" not in f or "X" not in f:
                raise InputError(f"{str(path)!r} is not an AnnData .h5ad file (needs X, obs and var)")
            node = f["X"] if layer is None else self._layer(f.get("layers", {}), layer)
            enc = node.attrs.get("encoding-type", "array")
            self._matrix = sparse_dataset(node) if enc in ("csr_matrix", "csc_matrix") else node
            self.obs = read_elem(f["obs"])
            self.var_names = pd.Index(read_elem(f["var"]).index.astype(str))
        self.obs.index = self.obs.index.astype(str)
        self.shape = (len(self.obs), len(self.var_names))
        if tuple(self._matrix.shape) != self.shape:
            raise InputError(f"count matrix shape {tuple(self._matrix.shape)} does not match obs x var {self.shape}")

    @staticmethod
    def _layer(layers, name):
        if name not in layers:
            raise InputError(f"layer {name!r} not found; available layers: {sorted(layers.keys()) or 'none'}")
        return layers[name]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def blocks(self, chunk_cells: int = CHUNK_CELLS) -> Iterator[tuple[slice, sparse.csr_matrix]]:
        """Yield ``(cell slice, CSR block)`` pairs, validating each block's counts."""
        n = self.shape[0]
        for start in range(0, n, chunk_cells):
            sl = slice(start, min(start + chunk_cells, n))
            block = self._matrix[sl]
            block = sparse.csr_matrix(block) if not sparse.issparse(block) else block.tocsr()
            _check_block(block.data, self.obs.index[sl], self.layer)
            yield sl, block


def _check_block(values: np.ndarray, cells: pd.Index, layer) -> None:
    where = f"layer {layer!r}" if layer else "X"
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where} holds NaN or infinite counts (first cell affected near {cells[0]!r}); "
                         "give raw counts")
    if np.any(values < 0):
        raise InputError(f"{where} holds negative counts; give raw counts (e.g. --layer counts), not normalized data")
    if np.any(values != np.round(values)):
        raise InputError(f"{where} holds non-integer values; give raw counts (e.g. --layer counts), "
                         "not normalized or log-transformed data")


def read_cells(source, design: str, layer: str | None = None, size_factors="poscounts",
               chunk_cells: int = CHUNK_CELLS) -> CountData:
    """Cell-level :class:`CountData` from AnnData (``obs`` is the sample table).

    The genes x cells matrix is assembled block by block from the file;
    size factors default to ``poscounts`` because single-cell counts are
    mostly zeros.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> obs = pd.DataFrame({"condition": ["x", "x", "y", "y"]}, index=["c1", "c2", "c3", "c4"])
    >>> a = ad.AnnData(np.array([[1, 0], [2, 3], [0, 4], [5, 1]], dtype=float), obs=obs)
    >>> d = read_cells(a, design="~ condition")
    >>> d.n_genes, d.n_obs
    (2, 4)
    """
    with _open(source, layer) as m:
        counts = np.zeros((m.shape[1], m.shape[0]), dtype=np.int64)
        for sl, block in m.blocks(chunk_cells):
            counts[:, sl] = block.T.toarray()
        frame = pd.DataFrame(counts, index=m.var_names, columns=m.obs.index)
        return CountData.from_pandas(frame, m.obs, design=design, size_factors=size_factors)


def pseudobulk(source, donor: str, design: str, cell_type: str | None = None, layer: str | None = None,
               size_factors="ratio", min_cells: int = 1, chunk_cells: int = CHUNK_CELLS) -> dict[str, CountData]:
    """Sum cells by (donor, cell type) into one :class:`CountData` per cell type.

    Parameters
    ----------
    source : str, Path or anndata.AnnData
        ``.h5ad`` path or AnnData with raw counts in ``X`` or ``layer``.
    donor : str
        ``obs`` column naming the biological replicate (one pseudobulk sample per value).
    design : str
        Design formula over donor-level ``obs`` columns (e.g. ``"~ condition"``).
    cell_type : str, optional
        ``obs`` column to split by; without it all cells form one group ``"all"``.
    min_cells : int
        Pseudobulk samples built from fewer cells are dropped.

    Returns
    -------
    dict
        Cell type -> CountData. Sample ids are donor values; the sample table
        holds every ``obs`` column that is constant within donors plus
        ``n_cells``. Cell types whose design cannot be fitted (e.g. one
        condition only) are skipped with a warning naming the reason.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> obs = pd.DataFrame({"donor": list("aabbccdd"), "condition": list("xxxxyyyy"), "ct": list("TBTBTBTB")},
    ...                    index=[f"c{i}" for i in range(8)])
    >>> X = np.arange(16).reshape(8, 2) % 5
    >>> cts = pseudobulk(ad.AnnData(X.astype(float), obs=obs), donor="donor", design="~ condition",
    ...                  cell_type="ct", size_factors="none")
    >>> sorted(cts), cts["T"].samples["n_cells"].tolist()
    (['B', 'T'], [1, 1, 1, 1])
    """
    with _open(source, layer) as m:
        obs = m.obs
        for col in (donor, cell_type):
            if col is not None and col not in obs.columns:
                raise InputError(f"obs has no column {col!r}; columns: {list(obs.columns)}")
        keys = obs[donor].astype(str)
        ct = obs[cell_type].astype(str) if cell_type is not None else pd.Series("all", index=obs.index)
        if keys.isna().any() or (obs[donor].isna()).any():
            raise InputError(f"obs column {donor!r} has missing values; every cell needs a donor")
        group = pd.MultiIndex.from_arrays([ct.to_numpy(), keys.to_numpy()], names=["cell_type", "donor"])
        codes, uniques = pd.factorize(group)
        indicator = sparse.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)),
                                      shape=(codes.size, len(uniques)))
        sums = np.zeros((m.shape[1], len(uniques)))
        for sl, block in m.blocks(chunk_cells):
            sums += (block.T @ indicator[sl]).toarray()
        n_cells = np.bincount(codes, minlength=len(uniques))
        donor_table = _donor_table(obs, donor)
        var_names = m.var_names
    out: dict[str, CountData] = {}
    skipped = []
    for name in sorted(set(uniques.get_level_values(0))):
        cols = np.flatnonzero((uniques.get_level_values(0) == name) & (n_cells >= min_cells))
        donors = uniques.get_level_values(1)[cols]
        counts = pd.DataFrame(np.rint(sums[:, cols]).astype(np.int64), index=var_names, columns=donors)
        samples = donor_table.loc[donors].copy()
        samples["n_cells"] = n_cells[cols]
        try:
            out[name] = CountData.from_pandas(counts, samples, design=design, size_factors=size_factors)
        except InputError as exc:
            skipped.append(f"{name}: {exc}")
    for reason in skipped:
        log.warning("pseudobulk: skipped cell type %s", reason)
    if not out:
        raise InputError("no cell type could be fitted: " + "; ".join(skipped))
    return out


def _donor_table(obs: pd.DataFrame, donor: str) -> pd.DataFrame:
    """One row per donor with the obs columns that are constant within every donor."""
    grouped = obs.groupby(obs[donor].astype(str), observed=True, sort=False)
    keep = [c for c in obs.columns if c != donor and (grouped[c].nunique(dropna=False) <= 1).all()]
    table = grouped[keep].first() if keep else pd.DataFrame(index=grouped.size().index)
    table.index.name = "sample"
    for c in keep:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            table[c] = table[c].astype(str)
    return table


def _open(source, layer) -> CellMatrix:
    return CellMatrix(source, layer=layer)
