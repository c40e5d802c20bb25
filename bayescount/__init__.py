"""bayescount: hierarchical Bayesian count models for genomics and beyond.

Data flows one way: :class:`CountData` → template spec (:func:`load_spec`)
→ PyMC graph (:func:`build_model`) → :func:`fit` → :class:`Fit` → answers
(:meth:`Fit.lfc`).

Examples
--------
>>> import bayescount as bc
>>> sim = bc.simulate(n_genes=200, n_per_group=3, random_seed=0)
>>> res = bc.fit(sim.data, model="nb_trend", method="map", random_seed=0)
>>> table = res.lfc(["group", "B", "A"])
>>> int((table.svalue < 0.05).sum()) >= 0
True
"""

import logging

from .compare import compare, compare_evidence
from .data import CountData, compute_size_factors
from .design import build_design
from .errors import InputError, ResultIntegrityError, SpecError
from .fit import fit
from .loglik import log_likelihood
from .loo import loo, waic
from .ppc import ppc
from .model import build_model
from .result import Fit
from .sbc import draw_from_prior, sbc
from .simulate import Simulation, simulate, simulate_cells
from .singlecell import pseudobulk, read_cells
from .spec import list_templates, load_spec

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CountData", "Fit", "InputError", "ResultIntegrityError", "Simulation", "SpecError",
    "build_design", "build_model", "compare", "compare_evidence", "log_likelihood", "loo", "ppc", "waic", "compute_size_factors", "draw_from_prior", "fit", "list_templates", "load_spec", "pseudobulk",
    "read_cells", "sbc", "simulate", "simulate_cells",
]
