"""The sdeflow command line."""

import subprocess
import sys

import pytest
import torch

from sdeflow.cli import main
from sdeflow.io import load_arrays


def test_simulate_prints_closed_form_and_saves(tmp_path, capsys):
    out = tmp_path / "paths.pt"
    rc = main(["simulate", "--sde", "ou", "--param", "theta=2", "--paths", "2000", "--dt", "0.01",
               "--n-save", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "closed form" in text and "mean" in text and "q95" in text
    data = load_arrays(out)
    assert data["xs"].shape == (3, 2000, 1) and data["ts"].tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_simulate_npz_and_bad_input(tmp_path, capsys):
    assert main(["simulate", "--sde", "edm", "--paths", "100", "--t1", "2", "--dt", "0.05",
                 "--out", str(tmp_path / "x.npz")]) == 0
    assert load_arrays(tmp_path / "x.npz")["xs"].dtype == torch.float32
    assert main(["simulate", "--sde", "ou", "--param", "sigma=-1"]) == 2
    assert "sigma must be > 0" in capsys.readouterr().err
    assert main(["simulate", "--sde", "gbm", "--method", "sra1", "--paths", "10"]) == 2
    assert "Methods that can" in capsys.readouterr().err
    assert main(["simulate", "--paths", "10", "--out", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "sdeflow.cli", "simulate", "--sde", "bm", "--paths", "50",
                        "--dt", "0.1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backend native" in r.stdout


def test_bench_json(capsys):
    import json

    assert main(["bench", "--json", "--repeats", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    cases = [r["case"] for r in data["results"]]
    assert any("simulate" in c for c in cases) and any("ODE" in c for c in cases)
    assert all(r["sdeflow"] > 0 and r["reference"] > 0 for r in data["results"])
    assert main(["bench", "--repeats", "0"]) == 2
