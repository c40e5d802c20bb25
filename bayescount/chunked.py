"""Chunked, resumable MAP fits: each finished gene chunk goes to a zarr store as it is done.

The shared hyperparameters (dispersion trend, LFC-prior weights and scales,
random-effect population) are estimated first, on the usual subset of genes
(:data:`bayescount.fit_map.HYPER_GENES`, spread over base means), and written
to the store; given them the genes are independent, so each chunk is fitted
on its own, its results (the LFC table's per-gene columns) and its posterior
(the Laplace mixture the draws come from) are written, and only then is the
chunk marked done. A killed run leaves at most one unmarked chunk, which the
next run of the same command overwrites. Gene-wide quantities (s-values, BH
adjusted p-values) are computed when the table is assembled. A store made
from another spec, other data or other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ._threads import resolve_threads, threads_limit
from .data import CountData
from .errors import InputError
from .loglik import parse_memory
from .progress import progress_bar
from .result import package_versions
from .spec import Spec, load_spec
from .stats import bh_adjust, svalue

log = logging.getLogger(__name__)

STORE_FORMAT = 1
#: Per-gene bytes of the MAP path's working arrays per observation (kernel outputs, node tables).
_BYTES_PER_COUNT = 8 * 120


def data_fingerprint(data: CountData) -> str:
    """SHA-256 over counts, gene and sample ids, design, offsets, weights and the sample table."""
    h = hashlib.sha256()
    for arr in (data.counts, data.design.matrix, data.offset,
                data.weights if data.weights is not None else np.zeros(0)):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\x1f".join(map(str, data.genes)).encode())
    h.update(data.samples.to_csv().encode())
    h.update(data.design.formula.encode())
    extra = (data.dispersion_groups.column if data.dispersion_groups else "",
             data.zero_design.formula if data.zero_design else "")
    h.update(repr(extra).encode())
    return h.hexdigest()


def chunk_genes(data: CountData, memory) -> int:
    """Genes per chunk so the MAP path's per-chunk arrays fit in ``memory``."""
    return int(max(50, min(data.n_genes, parse_memory(memory) // (data.n_obs * _BYTES_PER_COUNT))))


def fit_chunked(data: CountData, store, model: str | Spec = "nb_trend", contrast=None, memory="4GB",
                random_seed: int = 0, hdi_prob: float = 0.95, chunk_size: int | None = None,
                progress: bool = False, client=None, n_threads: int | None = None) -> pd.DataFrame:
    """Fit by MAP in gene chunks, writing each to a zarr ``store``; rerunning resumes.

    Parameters
    ----------
    data : CountData
    store : str or Path
        A zarr directory. Created if missing; if it exists it must come from
        the same spec, data and settings, and its finished chunks are kept.
    model : str or Spec
    contrast : optional
        The LFC table's contrast (as :meth:`bayescount.Fit.lfc`).
    memory : str or int
        Budget for one chunk's working arrays ("4GB"); sets the chunk size.
    random_seed : int
    chunk_size : int, optional
        Genes per chunk (overrides ``memory``).
    client : dask.distributed.Client, optional
        Fit the chunks on this Dask cluster (the hyperparameters are
        estimated here first and sent with every chunk); results are written
        to the store by this process as they arrive.
    n_threads : int, optional
        Threads per chunk here (as :func:`bayescount.fit`); on a Dask
        cluster each chunk runs on one (the workers are the parallelism).

    Returns
    -------
    pandas.DataFrame
        The LFC table of every gene, as :meth:`bayescount.Fit.lfc` gives it
        on the MAP path; equal to an unchunked fit's when all genes take part
        in the hyperparameter estimate (at most ``HYPER_GENES``).

    Examples
    --------
    >>> import tempfile
    >>> from bayescount import simulate
    >>> sim = simulate(n_genes=120, n_per_group=3, random_seed=1)
    >>> table = fit_chunked(sim.data, tempfile.mkdtemp() + "/run.zarr", chunk_size=50, random_seed=1)
    >>> len(table)
    120
    """
    import zarr

    from .fit_map import _estimate_hyper, _hyper_subset
    from .map_hyper import _hyper_functions, _unpack_u
    from .model import layout
    from .newton import GeneProblem

    spec = load_spec(model) if not isinstance(model, Spec) else model
    lay = layout(spec, data)
    vec, label = data.design.contrast_vector(contrast, data.samples)
    size = chunk_size or chunk_genes(data, memory)
    bounds = [(g0, min(g0 + size, data.n_genes)) for g0 in range(0, data.n_genes, size)]
    settings = {"format": STORE_FORMAT, "spec_hash": spec.hash, "data": data_fingerprint(data),
                "random_seed": int(random_seed), "chunk_size": int(size), "contrast": label,
                "hdi_prob": float(hdi_prob)}
    path = Path(store)
    root = zarr.open_group(str(path), mode="a")
    stored = root.attrs.get("settings")
    if stored is not None and stored != settings:
        diff = [k for k in settings if stored.get(k) != settings[k]]
        raise InputError(f"store {str(path)!r} was made by a different run ({', '.join(diff)} differ); "
                         "use another --store, or delete it to start over")
    if stored is None:
        root.attrs.update({"settings": settings, "spec": spec.to_json(), "versions": package_versions(),
                           "n_chunks": len(bounds)})
    hf = _hyper_functions(spec, lay)
    if "hyper_u" in root.attrs:
        u = np.array(root.attrs["hyper_u"], dtype=float)
        pi = None if root.attrs["hyper_pi"] is None else np.array(root.attrs["hyper_pi"], dtype=float)
        log.info("resuming: shared hyperparameters read from the store")
    else:
        rows = _hyper_subset(data.base_mean, 2000)
        sub = data if rows is None else data.subset_genes(rows)
        with progress_bar(progress, "hyperparameters", total=None) as bar:
            u, pi, _, _ = _estimate_hyper(GeneProblem(spec, sub, lay), sub, lay, hf, 40, 2e-3, bar,
                                          resolve_threads(n_threads))
        root.attrs.update({"hyper_u": u.tolist(), "hyper_pi": None if pi is None else pi.tolist(),
                           "hyper": {k: np.asarray(v).tolist() for k, v in _unpack_u(lay, u).items()}})
    chunks = root.require_group("chunks")
    todo = []
    for i, (g0, g1) in enumerate(bounds):
        name = str(i)
        if name in chunks and "done" in chunks[name].attrs:
            continue
        if name in chunks:
            del chunks[name]  # a chunk the last run did not finish
        todo.append(i)
    args = (spec.to_json(), u, pi, settings["random_seed"], vec, hdi_prob, 1 if client is not None else n_threads)
    with progress_bar(progress, "gene chunks", total=len(bounds)) as bar:
        bar.advance(len(bounds) - len(todo))
        if client is None:
            results = ((i, chunk_result(data.subset_genes(np.arange(*bounds[i])), *args)) for i in todo)
        else:
            # Chunks are independent given the broadcast hyperparameters; the store has one writer (here).
            from dask.distributed import as_completed

            futures = {client.submit(chunk_result, data.subset_genes(np.arange(*bounds[i])), *args, pure=False): i
                       for i in todo}
            results = ((futures[f], f.result()) for f in as_completed(futures))
        for i, arrays in results:
            group = chunks.create_group(str(i))
            for key, value in arrays.items():
                group.create_array(key, data=value)
            group.attrs["done"] = True
            log.info("chunk %d/%d (genes %d-%d) written", i + 1, len(bounds), bounds[i][0], bounds[i][1] - 1)
            bar.advance()
    return read_table(path, data)


def chunk_result(part: CountData, spec_json: str, u, pi, seed: int, vec, hdi_prob: float,
                 n_threads: int | None = 1) -> dict[str, np.ndarray]:
    """Fit one chunk of genes with the shared hyperparameters fixed: its LFC columns and Laplace mixture.

    A pure function of its arguments (``n_threads`` changes the speed, not the
    answers), so it runs the same in this process or on a Dask worker.
    """
    with threads_limit(resolve_threads(n_threads)):
        return _chunk_result(part, spec_json, u, pi, seed, vec, hdi_prob)


def _chunk_result(part, spec_json, u, pi, seed, vec, hdi_prob) -> dict[str, np.ndarray]:
    import xarray as xr

    from .fit import _constant_data, _map_tree
    from .fit_map import _fit_genes
    from .map_hyper import _hyper_functions
    from .model import layout
    from .newton import GeneProblem
    from .result import Fit
    from .spec import spec_from_json

    spec = spec_from_json(spec_json)
    lay = layout(spec, part)
    hf = _hyper_functions(spec, lay)
    n_threads = resolve_threads(None)  # the caller's, set by threads_limit
    state, _, _ = _fit_genes(GeneProblem(spec, part, lay), part, lay, hf, u, pi, 2e-3, refine=False,
                             n_threads=n_threads)
    # The table needs no draws: the posterior is never made.
    tree, pending = _map_tree(state, part, lay, 2, seed, False, spec, n_threads=n_threads)
    tree.attrs.update({"method": "map", "spec": spec_json, "spec_hash": spec.hash, "random_seed": seed,
                       "hyper": json.dumps({k: np.asarray(v).tolist() for k, v in state.hyper.items()}),
                       "design": part.design.formula, "sample_columns": json.dumps(list(part.samples.columns)),
                       "hyper_names": json.dumps(list(lay.hyper)),
                       "dispersion_by": part.dispersion_groups.column if part.dispersion_groups else "",
                       "zero_design": part.zero_design.formula if part.zero_design else ""})
    tree["constant_data"] = xr.DataTree(_constant_data(part))
    table = Fit(idata=tree, spec=spec, posterior=pending).lfc(vec, hdi_prob=hdi_prob)
    # Gene ids come from the data; flags, s-values and padj are gene-wide and computed on assembly.
    out = {c: table[c].to_numpy(dtype=float) for c in table.columns if c not in ("gene", "flag", "svalue", "padj")}
    out["converged"] = state.converged.astype(np.int8)
    for name in ("mode", "cov", "weights", "prior_component", "map_mode"):
        out[f"laplace_{name}"] = np.asarray(getattr(state, name))
    return out


def read_table(store, data: CountData) -> pd.DataFrame:
    """Assemble the LFC table of a finished store (s-values and padj over all genes)."""
    import zarr

    root = zarr.open_group(str(store), mode="r")
    chunks = root["chunks"]
    n = int(root.attrs["n_chunks"])
    missing = [i for i in range(n) if str(i) not in chunks or "done" not in chunks[str(i)].attrs]
    if missing:
        raise InputError(f"store {str(store)!r} is not finished ({len(missing)} of {n} chunks missing); "
                         "rerun the same command to resume")
    cols: dict[str, list] = {}
    for i in range(n):
        g = chunks[str(i)]
        for key in g.array_keys():
            if not key.startswith("laplace_"):
                cols.setdefault(key, []).append(g[key][:])
    out = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    conv = out.pop("converged").to_numpy().astype(bool)
    out.insert(0, "gene", np.asarray(data.genes, dtype=object))
    out["svalue"] = svalue(out["lfsr"].to_numpy())
    flags = np.array([";".join(x for x in (f, "" if c else "map_not_converged") if x)
                      for f, c in zip(data.flags.astype(str), conv)], dtype=object)
    out["flag"] = flags
    if "pvalue" in out:
        out["padj"] = bh_adjust(out["pvalue"].to_numpy())
    from .result import LFC_COLUMNS

    first = [c for c in LFC_COLUMNS if c in out]
    rest = [c for c in out.columns if c not in first]
    return out[first + rest]


__all__ = ["fit_chunked", "read_table", "data_fingerprint", "chunk_genes"]
