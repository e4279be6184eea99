"""`sdeflow demo --quick`: the whole chain runs, every check passes, the report and figures are written."""

import pytest

from sdeflow.cli import main


@pytest.mark.slow
def test_demo_quick_passes_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "checks passed" in text and "FAIL" not in text
    report = (out / "report.md").read_text()
    assert "| step | check | against | value | pass if | result |" in report
    for png in ("sde_vs_pf_ode.png", "fokker_planck.png", "error_vs_nfe.png", "samples_by_nfe.png",
                "consistency_samples.png", "self_consistency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in report


def test_demo_refuses_a_file_as_out(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["demo", "--quick", "--out", str(f)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_demo_refuses_an_unusable_device_naming_the_option(tmp_path, capsys):
    import torch

    bad = ["--device", "gpu0"] if torch.cuda.is_available() else ["--device", "cuda"]
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), *bad]) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "cpu" in err
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_check_demo_device():
    import torch

    from sdeflow.demo import check_demo_device

    assert check_demo_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        check_demo_device("gpu0")
    with pytest.raises(ValueError, match="runs on 'cpu' or 'cuda'"):
        check_demo_device("meta")


@pytest.mark.cuda
@pytest.mark.slow
def test_demo_quick_on_cuda_passes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--device", "cuda", "--out", str(out)]) == 0
    assert "FAIL" not in capsys.readouterr().out
    assert "device cuda" in (out / "report.md").read_text()
