"""The CLI contract: outputs, exit code 2 on bad input, no partial files."""

import subprocess
import sys

import pandas as pd
import pytest

from bayescount.cli import main

COLUMNS = ["gene", "base_mean", "log2fc", "log2fc_sd", "hdi_low", "hdi_high", "lfsr", "svalue", "dispersion", "flag"]


@pytest.fixture(scope="module")
def simdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "--genes", "300", "--samples", "8", "--out", str(out), "--seed", "3"]) == 0
    return out


def test_simulate_writes_three_tables(simdir):
    counts = pd.read_csv(simdir / "counts.csv", index_col=0)
    assert counts.shape == (300, 8)
    assert {"true_log2fc", "is_de"} <= set(pd.read_csv(simdir / "truth.csv").columns)
    assert list(pd.read_csv(simdir / "samples.csv", index_col=0).group) == list("AAAABBBB")


def test_fit_writes_table_and_fit(simdir, tmp_path):
    out, save = tmp_path / "res.csv", tmp_path / "fit.nc"
    rc = main(["fit", str(simdir / "counts.csv"), "--samples", str(simdir / "samples.csv"), "--design", "~ group",
               "--contrast", "group,B,A", "--hdi-prob", "0.9", "--out", str(out), "--save", str(save), "--seed", "4",
               "--quiet"])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS and {"pvalue", "padj"} <= set(table.columns)
    assert len(table) == 300 and save.is_file()
    # Default contrast with one two-level factor is B vs A.
    out2 = tmp_path / "res2.csv"
    assert main(["fit", str(simdir / "counts.csv"), "--samples", str(simdir / "samples.csv"), "--design", "~ group",
                 "--out", str(out2), "--seed", "4", "--quiet"]) == 0
    cols = ["gene", "log2fc", "log2fc_sd", "lfsr", "svalue"]
    pd.testing.assert_frame_equal(pd.read_csv(out2)[cols], table[cols], check_exact=False, rtol=1e-8)


def _bad_counts(simdir, tmp_path, kind):
    counts = pd.read_csv(simdir / "counts.csv", index_col=0)
    samples = pd.read_csv(simdir / "samples.csv", index_col=0)
    if kind == "negative":
        counts.iloc[0, 0] = -3
    elif kind == "noninteger":
        counts = counts.astype(float)
        counts.iloc[0, 0] = 1.5
    elif kind == "nan":
        counts = counts.astype(float)
        counts.iloc[0, 0] = float("nan")
    elif kind == "dup_sample":
        samples = pd.concat([samples, samples.iloc[[0]]])
    elif kind == "missing_sample":
        samples = samples.iloc[1:]
    elif kind == "empty":
        counts = counts.iloc[:0]
    c, s = tmp_path / f"{kind}_counts.csv", tmp_path / f"{kind}_samples.csv"
    counts.to_csv(c)
    samples.to_csv(s)
    return c, s


@pytest.mark.parametrize("kind,words", [
    ("negative", "negative"), ("noninteger", "non-integer"), ("nan", "NaN"),
    ("dup_sample", "duplicated"), ("missing_sample", "not in the sample table"), ("empty", "empty"),
])
def test_bad_input_exits_2_without_output(simdir, tmp_path, kind, words):
    c, s = _bad_counts(simdir, tmp_path, kind)
    out = tmp_path / "out.csv"
    proc = subprocess.run([sys.executable, "-m", "bayescount.cli", "fit", str(c), "--samples", str(s),
                           "--design", "~ group", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("bayescount: error")]
    assert len(err) == 1 and words in err[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("args,words", [
    (["--design", "~ group + group"], None),
    (["--design", "~ condition"], "not columns"),
    (["--design", "~ group", "--coef", "nope"], "unknown coefficient"),
    (["--design", "~ group", "--contrast", "group,B"], "factor,level,reference"),
    (["--design", "~ group", "--model", "zzz"], "unknown template"),
    (["--design", "~ group", "--threads", "0"], "--threads) must be a positive integer"),
])
def test_bad_options_exit_2(simdir, tmp_path, args, words, capsys):
    out = tmp_path / "o.csv"
    rc = main(["fit", str(simdir / "counts.csv"), "--samples", str(simdir / "samples.csv"), *args,
               "--out", str(out), "--quiet"])
    if words is None:  # a duplicated term is legal formula syntax and is fitted
        assert rc == 0
        return
    assert rc == 2 and words in capsys.readouterr().err and not out.exists()


def test_missing_output_folder_fails_before_fitting(simdir, tmp_path, capsys):
    rc = main(["fit", str(simdir / "counts.csv"), "--samples", str(simdir / "samples.csv"), "--design", "~ group",
               "--out", str(tmp_path / "nope" / "o.csv")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_demo_runs(capsys):
    assert main(["demo", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "poisson_fp_svalue" in out and "calls at svalue < 0.05" in out


def test_fit_with_random_effects_and_save_load(tmp_path):
    import bayescount as bc

    sim = bc.simulate_cells(n_genes=30, n_donors_per_group=3, cells_per_donor=15, random_seed=1)
    counts, samples = tmp_path / "counts.csv", tmp_path / "cells.csv"
    sim.counts.to_csv(counts)
    sim.samples.to_csv(samples)
    out, save = tmp_path / "res.csv", tmp_path / "fit.nc"
    args = ["fit", str(counts), "--samples", str(samples), "--design", "~ condition + (1|donor)",
            "--size-factors", "poscounts", "--out", str(out), "--seed", "1", "--quiet"]
    # A template without random effects refuses the design, naming the ones that have them.
    assert main(args) == 2 and not out.exists()
    assert main(args + ["--model", "nb_donor", "--save", str(save)]) == 0
    assert len(pd.read_csv(out)) == 30
    res = bc.Fit.load(save)
    table = res.random_effects()
    assert list(table.term.unique()) == ["1|donor"] and len(table) == 30


def test_sbc_writes_summary_ranks_and_plot(tmp_path, capsys):
    samples = tmp_path / "samples.csv"
    pd.DataFrame({"group": ["A"] * 4 + ["B"] * 4}, index=[f"s{i}" for i in range(8)]).to_csv(samples)
    out, ranks, plot = tmp_path / "sbc.csv", tmp_path / "ranks.csv", tmp_path / "sbc.png"
    rc = main(["sbc", str(samples), "--design", "~ group", "--genes", "300", "--out", str(out), "--ranks", str(ranks),
               "--plot", str(plot), "--quiet"])
    assert rc == 0 and "cover_90" in capsys.readouterr().out
    summary = pd.read_csv(out)
    assert set(summary.coord) == {"Intercept", "group[T.B]"} and (summary.n == 300).all()
    assert len(pd.read_csv(ranks)) == 600 and plot.stat().st_size > 0
    # A design naming a column the sample table lacks: exit 2, nothing written.
    out2 = tmp_path / "sbc2.csv"
    rc = main(["sbc", str(samples), "--design", "~ condition", "--genes", "300", "--out", str(out2), "--quiet"])
    assert rc == 2 and "condition" in capsys.readouterr().err and not out2.exists()
    # Zero-part covariates are drawn and fitted: their coefficients are ranked too.
    out3 = tmp_path / "sbc3.csv"
    rc = main(["sbc", str(samples), "--design", "~ group", "--model", "zinb_trend", "--zero-design", "~ group",
               "--genes", "200", "--out", str(out3), "--quiet"])
    assert rc == 0
    zero = pd.read_csv(out3).query("variable == 'logit_zero'")
    assert set(zero.coord) == {"Intercept", "group[T.B]"}
