"""Chunked, resumable MAP runs: same table as one fit, kill-and-resume, mismatched stores refused."""

import json
import os
import signal
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import bayescount as bc
from bayescount.chunked import fit_chunked

SEED = 6611


@pytest.fixture(scope="module")
def sim():
    return bc.simulate(n_genes=600, n_per_group=4, frac_de=0.2, random_seed=SEED)


def test_chunked_equals_unchunked(sim, tmp_path):
    chunked = fit_chunked(sim.data, tmp_path / "run.zarr", chunk_size=130, random_seed=1)
    whole = bc.fit(sim.data, random_seed=1).lfc()
    assert list(chunked.gene) == list(whole.gene) and list(chunked.flag) == list(whole.flag)
    for col in whole.columns.drop(["gene", "flag"]):
        np.testing.assert_allclose(chunked[col], whole[col], rtol=1e-9, atol=1e-12, err_msg=col)
    # A finished store answers again without fitting; other settings are refused.
    again = fit_chunked(sim.data, tmp_path / "run.zarr", chunk_size=130, random_seed=1)
    pd.testing.assert_frame_equal(again, chunked)
    with pytest.raises(bc.InputError, match="chunk_size"):
        fit_chunked(sim.data, tmp_path / "run.zarr", chunk_size=100, random_seed=1)
    other = bc.simulate(n_genes=600, n_per_group=4, frac_de=0.2, random_seed=SEED + 1)
    with pytest.raises(bc.InputError, match="data"):
        fit_chunked(other.data, tmp_path / "run.zarr", chunk_size=130, random_seed=1)
    with pytest.raises(bc.InputError, match="spec_hash"):
        fit_chunked(sim.data, tmp_path / "run.zarr", model="poisson", chunk_size=130, random_seed=1)


def _done_chunks(store):
    chunks = store / "chunks"
    if not chunks.exists():
        return 0
    n = 0
    for d in chunks.iterdir():
        meta = d / "zarr.json"
        if meta.exists():
            try:
                n += bool(json.loads(meta.read_text()).get("attributes", {}).get("done"))
            except json.JSONDecodeError:
                pass
    return n


def test_kill_and_resume_gives_the_same_table(tmp_path):
    big = bc.simulate(n_genes=3000, n_per_group=4, frac_de=0.2, random_seed=SEED + 2)
    big.counts.to_csv(tmp_path / "c.csv")
    big.samples.to_csv(tmp_path / "s.csv")
    store = tmp_path / "run.zarr"
    cmd = [sys.executable, "-m", "bayescount", "fit", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"),
           "--design", "~ group", "--store", str(store), "--chunk-genes", "50", "--seed", "2", "--quiet"]
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed.csv")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _done_chunks(store) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _done_chunks(store)
    assert 3 <= done < 60, done  # killed part-way: some chunks written, not all
    assert not (tmp_path / "killed.csv").exists()
    resumed = subprocess.run(cmd + ["--out", str(tmp_path / "resumed.csv")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    # The fresh run logs its progress instead (a pipeline asking for it, stderr not a terminal).
    fresh_cmd = [{str(store): str(tmp_path / "fresh.zarr"), "--quiet": "--progress-log"}.get(c, c) for c in cmd]
    fresh = subprocess.run(fresh_cmd + ["--out", str(tmp_path / "fresh.csv")], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert re.search(r"gene chunks: (\d+)/\1 \(100%\), elapsed \d+ s, ETA 0 s", fresh.stderr), fresh.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed.csv"), pd.read_csv(tmp_path / "fresh.csv"))


def test_dask_local_cluster_gives_the_local_results(sim, tmp_path):
    """Two workers on loopback fit the chunks; the hyperparameters are estimated first and broadcast."""
    distributed = pytest.importorskip("dask.distributed")
    local = fit_chunked(sim.data, tmp_path / "local.zarr", chunk_size=150, random_seed=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        remote = fit_chunked(sim.data, tmp_path / "dask.zarr", chunk_size=150, random_seed=3, client=client)
    pd.testing.assert_frame_equal(local, remote)


def test_cli_scheduler_dask(sim, tmp_path):
    from bayescount.cli import main

    sim.counts.iloc[:200].to_csv(tmp_path / "c.csv")
    sim.samples.to_csv(tmp_path / "s.csv")
    base = ["fit", str(tmp_path / "c.csv"), "--samples", str(tmp_path / "s.csv"), "--design", "~ group", "--quiet",
            "--seed", "1", "--chunk-genes", "100"]
    assert main(base + ["--scheduler", "dask", "--workers", "2", "--out", str(tmp_path / "d.csv")]) == 0
    assert main(base + ["--store", str(tmp_path / "l.zarr"), "--out", str(tmp_path / "l.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "d.csv"), pd.read_csv(tmp_path / "l.csv"))
    assert main(base + ["--scheduler-address", "tcp://127.0.0.1:1", "--out", str(tmp_path / "x.csv")]) == 2


def test_progress_log_lines_off_a_terminal(monkeypatch, caplog):
    from bayescount import progress

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    caplog.set_level("INFO", logger="bayescount.progress")
    with progress.progress_bar(True, "quiet chunks", total=4) as bar:  # not a terminal: nothing
        bar.advance()
    with progress.progress_bar("log", "gene chunks", total=4) as bar:
        for _ in range(4):
            bar.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert not any("quiet chunks" in m for m in lines)
    assert lines[-1].startswith("gene chunks: 4/4 (100%)") and "ETA 0 s" in lines[-1]
    assert len([m for m in lines if m.startswith("gene chunks")]) == 4
