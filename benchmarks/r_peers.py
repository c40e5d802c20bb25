"""R peers run side by side with bayescount: edgeR's QL pipeline, DESeq2 and a glmmTMB loop.

They run where ``Rscript`` and the Bioconductor/CRAN packages are installed; on
Debian (bookworm) that is one command, with no compiler needed::

    apt-get install -y --no-install-recommends r-base-core r-bioc-edger r-bioc-deseq2 r-cran-glmmtmb

Each peer runs in its own ``Rscript`` process on data written to a temporary
directory. Two times are reported:

* ``time``: measured inside R with ``proc.time()`` around the pipeline itself,
  from the count matrix in memory to the result table (R's start, loading the
  packages and reading the CSV are excluded: the most favourable time for the
  peer, matched to ours, which starts from pandas frames in memory);
* ``time_process``: the whole ``Rscript`` process (start, library loading, CSV
  reading and writing included).

``peak_rss_MiB`` is the R process's peak resident set size (``os.wait4``).

The pipelines are the packages' documented defaults:

* edgeR (quasi-likelihood, as in the edgeR user's guide): ``filterByExpr``,
  ``calcNormFactors``, ``estimateDisp``, ``glmQLFit(robust = TRUE)``,
  ``glmQLFTest``; genes removed by ``filterByExpr`` get no p-value (no call);
* DESeq2: ``DESeqDataSetFromMatrix``, ``DESeq``, ``results`` (one thread, as
  DESeq2 runs by default);
* glmmTMB: one ``glmmTMB(y ~ condition + (1 | donor) + offset(log_sf),
  family = nbinom2)`` per gene, the per-gene NB GLMM loop the issue refers to;
  Wald z of the condition coefficient.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: Every script: the package, then the counts (genes x samples) and the sample table in
#: the count columns' order; the peer's own code goes between ``t0`` and ``elapsed``.
_PRELUDE = r"""
suppressPackageStartupMessages(library({package}))
a <- commandArgs(trailingOnly = TRUE)
counts <- as.matrix(read.csv(a[1], row.names = 1, check.names = FALSE))
cd <- read.csv(a[2], row.names = 1)[colnames(counts), , drop = FALSE]
for (f in c("group", "condition", "donor")) if (!is.null(cd[[f]])) cd[[f]] <- factor(cd[[f]])
t0 <- proc.time()[["elapsed"]]
"""
_EPILOGUE = r"""
elapsed <- proc.time()[["elapsed"]] - t0
write.csv(out, a[3], row.names = FALSE)
cat(sprintf("%.6f\n", elapsed), file = a[4])
"""

_EDGER = r"""
y <- DGEList(counts = counts, group = cd$group)
keep <- filterByExpr(y)
y <- y[keep, , keep.lib.sizes = FALSE]
y <- calcNormFactors(y)
design <- model.matrix(~group, data = cd)
y <- estimateDisp(y, design)
fit <- glmQLFit(y, design, robust = TRUE)
res <- glmQLFTest(fit, coef = 2)
tt <- topTags(res, n = Inf, sort.by = "none")$table
out <- data.frame(gene = rownames(tt), log2fc = tt$logFC, pvalue = tt$PValue, padj = tt$FDR)
"""

_DESEQ2 = r"""
dds <- DESeqDataSetFromMatrix(counts, cd, ~group)
dds <- DESeq(dds, quiet = TRUE)
res <- results(dds, contrast = c("group", "B", "A"))
out <- data.frame(gene = rownames(res), log2fc = res$log2FoldChange, pvalue = res$pvalue, padj = res$padj)
"""

_GLMMTMB = r"""
out <- data.frame(gene = rownames(counts), log2fc = NA_real_, z = NA_real_, pvalue = NA_real_)
for (i in seq_len(nrow(counts))) {
  cd$y <- counts[i, ]
  fit <- tryCatch(glmmTMB(y ~ condition + (1 | donor) + offset(log_sf), family = nbinom2, data = cd),
                  error = function(e) NULL)
  if (!is.null(fit)) {
    co <- summary(fit)$coefficients$cond
    k <- grep("^condition", rownames(co))[1]
    out$log2fc[i] <- co[k, 1] / log(2); out$z[i] <- co[k, 3]; out$pvalue[i] <- co[k, 4]
  }
}
out$padj <- p.adjust(out$pvalue, "BH")
"""

_PACKAGES = {"edger": "edgeR", "deseq2": "DESeq2", "glmmtmb": "glmmTMB"}
_SCRIPTS = {"edger": _EDGER, "deseq2": _DESEQ2, "glmmtmb": _GLMMTMB}


def available(peer: str) -> bool:
    """Whether ``Rscript`` runs and the peer's R package loads."""
    if shutil.which("Rscript") is None:
        return False
    pkg = _PACKAGES[peer]
    probe = subprocess.run(["Rscript", "-e", f"quit(status = !requireNamespace('{pkg}', quietly = TRUE))"],
                           capture_output=True)
    return probe.returncode == 0


def versions() -> str:
    """R's and the peers' package versions, or a note that R is not installed."""
    if shutil.which("Rscript") is None:
        return "R not installed"
    code = ("v <- sapply(c('edgeR', 'DESeq2', 'glmmTMB'), function(p) tryCatch(as.character(packageVersion(p)), "
            "error = function(e) 'not installed')); cat(paste0('R ', getRversion(), ', ', "
            "paste(names(v), v, collapse = ', ')))")
    return subprocess.run(["Rscript", "-e", code], capture_output=True, text=True).stdout.strip()


def run(peer: str, counts: pd.DataFrame, samples: pd.DataFrame) -> dict:
    """Run one R peer on ``counts`` (genes x samples) and ``samples``; return times, peak RSS and its table.

    The table is indexed by gene with ``log2fc``, ``pvalue`` and ``padj`` (NaN where the
    peer gave none, e.g. genes that edgeR's ``filterByExpr`` removed).
    """
    with tempfile.TemporaryDirectory(prefix=f"bc-{peer}-") as tmp:
        d = Path(tmp)
        counts.to_csv(d / "counts.csv")
        samples.to_csv(d / "samples.csv")
        (d / "run.R").write_text(_PRELUDE.replace("{package}", _PACKAGES[peer]) + _SCRIPTS[peer] + _EPILOGUE)
        args = ["Rscript", str(d / "run.R"), str(d / "counts.csv"), str(d / "samples.csv"),
                str(d / "out.csv"), str(d / "time.txt")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stderr = proc.stderr.read()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{_PACKAGES[peer]} failed (exit {proc.returncode}): {stderr.strip()[-2000:]}")
        table = pd.read_csv(d / "out.csv", index_col="gene")
        table.index = table.index.astype(str)
        table = table.reindex(counts.index.astype(str))
        return {"time": float((d / "time.txt").read_text()), "time_process": wall,
                "peak_rss_MiB": usage.ru_maxrss / 1024.0, "table": table}


def glmmtmb_loop(counts: pd.DataFrame, samples: pd.DataFrame, size_factors: np.ndarray) -> dict:
    """Per-gene ``glmmTMB`` NB GLMMs (``condition`` fixed, ``(1 | donor)``, log size factors as offset)."""
    frame = samples.assign(log_sf=np.log(np.asarray(size_factors, dtype=float)))
    return run("glmmtmb", counts, frame)
