"""Pointwise log-likelihood of any fit, computed in gene chunks under a memory budget.

The posterior draws of a fit (MAP-path Laplace draws, ADVI or NUTS) are put
back in the layout of the batched per-gene problem and evaluated with the same
compiled likelihood kernel the MAP path uses, a chunk of genes at a time, so no
``draws x genes x samples`` array larger than the budget exists at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import xarray as xr

from .data import CountData
from .errors import InputError
from .model import Layout, layout
from .newton import GeneProblem
from .result import Fit

#: Default budget for one chunk's arrays.
DEFAULT_MEMORY = "1GB"
#: Arrays of one chunk's size alive at once while it is evaluated (eta, parameters, output).
_WORKING_COPIES = 5
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_memory(memory) -> int:
    """Bytes from ``4GB``, ``512MB``, ``2GiB`` or a number of bytes.

    Examples
    --------
    >>> parse_memory("4GB"), parse_memory("512 MiB"), parse_memory(1000)
    (4000000000, 536870912, 1000)
    """
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        value = int(memory)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(memory))
        if not m or m.group(2).upper() not in _UNITS:
            raise InputError(f"memory budget {memory!r} not understood; write e.g. '4GB' or '512MB'")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise InputError(f"memory budget must be positive, got {memory!r}")
    return value


def fit_data(res: Fit) -> CountData:
    """The fit's data as a :class:`CountData`, rebuilt from its stored groups (counts, samples, design)."""
    cd = res.idata["constant_data"]
    obs = res.idata["observed_data"]
    data = CountData(
        counts=np.asarray(obs["counts"].values, dtype=np.int64),
        genes=res.genes,
        samples=res.samples,
        design=res.design,
        size_factors=cd["size_factors"].values,
        offset=cd["offset"].values,
        flags=np.asarray(cd["flags"].values, dtype=object) if "flags" in cd else np.full(len(res.genes), "", object),
        weights=cd["weights"].values if "weights" in cd else None,
    )
    if res.idata.attrs.get("dispersion_by"):
        data = data.with_dispersion_by(res.idata.attrs["dispersion_by"])
    if res.idata.attrs.get("zero_design"):
        data = data.with_zero_design(res.idata.attrs["zero_design"])
    return data


def _theta(post: xr.Dataset, lay: Layout, genes: slice) -> np.ndarray:
    """Posterior draws ``(chain * draw, genes, K)`` in the layout's coordinate order."""
    parts = [post["beta"].isel(gene=genes).transpose("chain", "draw", "gene", "coef").values]
    if lay.re_coef:
        parts.append(post["re"].isel(gene=genes).transpose("chain", "draw", "gene", "re_coef").values)
    for pname in lay.gene_params:
        x = post[pname].isel(gene=genes)
        dim = lay.param_dim(pname)
        parts.append(x.transpose("chain", "draw", "gene", dim).values if dim else x.values[..., None])
    theta = np.concatenate(parts, axis=-1)
    return theta.reshape(-1, *theta.shape[2:])


def iter_chunks(res: Fit, memory=DEFAULT_MEMORY, data: CountData | None = None, copies: int = _WORKING_COPIES):
    """Yield ``(genes, problem, theta)`` per gene chunk: the batched per-gene problem of the chunk
    (its compiled kernels, counts, design) and the draws ``(chain * draw, genes, K)``."""
    data = fit_data(res) if data is None else data
    lay = layout(res.spec, data)
    post = res.idata["posterior"]
    n_draws = post.sizes["chain"] * post.sizes["draw"]
    step = max(1, parse_memory(memory) // (n_draws * data.n_obs * 8 * copies))
    for g0 in range(0, data.n_genes, step):
        genes = slice(g0, min(g0 + step, data.n_genes))
        sub = data.subset_genes(np.arange(genes.start, genes.stop))
        yield genes, GeneProblem(res.spec, sub, lay), _theta(post, lay, genes)


def iter_log_likelihood(res: Fit, memory=DEFAULT_MEMORY, data: CountData | None = None,
                        copies: int = _WORKING_COPIES) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(genes, loglik)`` per chunk, ``loglik`` of shape ``(chain, draw, genes, obs)``.

    ``copies``: how many arrays of the chunk's size the caller keeps alive at once
    (the chunk is sized so that they fit in ``memory``). Observation weights
    multiply each term, as in the fit.
    """
    post = res.idata["posterior"]
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    for genes, prob, theta in iter_chunks(res, memory, data, copies=copies):
        rows = np.arange(prob.y.shape[0])
        out = np.empty((theta.shape[0], *prob.y.shape))
        for d in range(theta.shape[0]):
            eta, params = prob._eta_params(theta[d], rows)
            out[d] = prob.pointwise(prob.y, eta, *params)
        if prob.w is not None:
            out *= prob.w[None]
        yield genes, out.reshape(n_chain, n_draw, *prob.y.shape)


def log_likelihood(res: Fit, memory=DEFAULT_MEMORY, store: bool = False) -> xr.DataArray:
    """The pointwise log-likelihood ``(chain, draw, gene, obs)`` of a fit's draws.

    Computed in gene chunks of at most ``memory`` (the returned array itself is
    the full size: for per-gene LOO at scale use :func:`bayescount.loo`, which
    never holds it). With ``store`` it also becomes the fit's
    ``log_likelihood`` group (variable ``counts``), as ``fit(...,
    log_likelihood=True)`` would have made it.

    Examples
    --------
    >>> from bayescount import simulate, fit
    >>> res = fit(simulate(n_genes=30, n_per_group=3, random_seed=1).data, random_seed=1, draws=50)
    >>> log_likelihood(res, memory="1MB").dims
    ('chain', 'draw', 'gene', 'obs')
    """
    post = res.idata["posterior"]
    obs = res.idata["observed_data"]
    full = np.empty((post.sizes["chain"], post.sizes["draw"], obs.sizes["gene"], obs.sizes["obs"]))
    for genes, ll in iter_log_likelihood(res, memory):
        full[:, :, genes] = ll
    da = xr.DataArray(full, dims=("chain", "draw", "gene", "obs"),
                      coords={"chain": post["chain"].values, "draw": post["draw"].values,
                              "gene": obs["gene"].values, "obs": obs["obs"].values}, name="counts")
    if store:
        res.idata["log_likelihood"] = xr.DataTree(da.to_dataset())
    return da


__all__ = ["fit_data", "iter_chunks", "iter_log_likelihood", "log_likelihood", "parse_memory"]
