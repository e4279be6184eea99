"""``sdeflow verify``: the quick suite passes, JSON and plot output, exit codes, the check registry."""

import json

import pytest

from sdeflow import cli
from sdeflow.verify import suite
from sdeflow.verify.suite import CheckOutcome, register_check, registered_checks, run_suite


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so checks added by a test disappear afterwards."""
    suite._load_modules()
    monkeypatch.setattr(suite, "_REGISTRY", dict(suite._REGISTRY))


def test_quick_suite_passes_with_table_json_and_plots(tmp_path, capsys):
    out_json = tmp_path / "report.json"
    plots = tmp_path / "plots"
    rc = cli.main(["verify", "--quick", "--json", str(out_json), "--plots", str(plots)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "check" in text and "measured" in text and "tolerance" in text and "FAIL" not in text
    report = json.loads(out_json.read_text())
    assert report["passed"] and report["n_failed"] == 0 and report["quick"]
    names = {c["name"] for c in report["checks"]}
    # The quick suite covers orders on both backends, FP residuals of every standard SDE, grids and MC vs grid.
    for name in ("order/strong/euler/native/gbm", "order/strong/euler/torchsde/gbm", "order/weak/euler/native/gbm_weak",
                 "order/strong/sra1/native/sine_additive", "fp_residual/vp", "fp_residual/gibbs_general_stationary",
                 "fp_grid/ou_1d_l1", "fp_grid/rotating_ou_2d_l1", "mc_vs_grid/double_well"):
        assert name in names
    for c in report["checks"]:
        assert {"measured", "expected", "tolerance", "passed", "seconds"} <= set(c)
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert "order_strong_euler_native_gbm.png" in pngs and "fp_grid_rotating_ou_2d.png" in pngs
    assert not list(plots.glob(".*tmp"))  # atomic writes leave no temporary files


def test_json_to_stdout_and_selection(capsys):
    rc = cli.main(["verify", "--quick", "--only", "fp_residual/*", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out)  # stdout is pure JSON (progress goes to stderr)
    assert report["n_checks"] == len([c for c in registered_checks(quick=True) if c.name.startswith("fp_residual/")])
    assert all(c["name"].startswith("fp_residual/") for c in report["checks"])


def test_failing_check_gives_exit_code_1(scratch_registry, capsys):
    @register_check("test/always_fails", quick=True, description="fails on purpose")
    def _fails(ctx):
        return CheckOutcome(measured=1.0, expected=0.0, tolerance=0.5, comparison="abs")

    @register_check("test/crashes", quick=True)
    def _crashes(ctx):
        raise RuntimeError("boom")

    assert cli.main(["verify", "--only", "test/*"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "RuntimeError: boom" in out
    rep = run_suite(quick=True, select="test/crashes")
    assert not rep.passed and rep.reports[0].error == "RuntimeError: boom"


def test_registry_api(scratch_registry, capsys):
    def fn(ctx):
        return CheckOutcome(measured=0.01, expected=0.0, tolerance=0.1, comparison="le")

    register_check("test/ok", fn, group="test")
    assert any(c.name == "test/ok" for c in registered_checks(select="test/ok"))
    with pytest.raises(ValueError, match="already registered"):
        register_check("test/ok", lambda ctx: None)
    register_check("test/ok", fn, replace=True)
    with pytest.raises(ValueError, match="comparison"):
        CheckOutcome(measured=0.0, expected=0.0, tolerance=0.0, comparison="eq")
    assert CheckOutcome(measured=2.0, expected=0.0, tolerance=1.0, comparison="ge").passed
    assert not CheckOutcome(measured=float("nan"), expected=0.0, tolerance=1.0, comparison="le").passed
    assert cli.main(["verify", "--list", "--only", "test/ok"]) == 0
    assert "test/ok" in capsys.readouterr().out


def test_verify_guide_examples_run(scratch_registry):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "verify.md").read_text()
    namespace = {}
    for code in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        exec(compile(code, "verify.md", "exec"), namespace)
    assert namespace["r"].passed
    assert any(c.name == "mine/tilted_stationary" for c in registered_checks(select="mine/*"))
    assert run_suite(select="mine/tilted_stationary").passed


def test_bad_arguments(capsys):
    assert cli.main(["verify", "--only", "no-such-check-xyz"]) == 2
    assert "no check matches" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert cli.main(["verify", "--device", "cuda", "--quick"]) == 2
