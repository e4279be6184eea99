"""`sdeflow train score` and `sdeflow sample`: checkpoints, resume, evaluation table, bad options."""

import json

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.cli import main


def test_train_resume_and_sample(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "score", "--data", "gmm8", "--iters", "40", "--batch", "128", "--out", str(out),
            "--no-progress", "--eval-samples", "500", "--checkpoint-every", "20", "--json", str(tmp_path / "ev.json")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "ΔNLL (model)" in text and "pathwise RMS to D*" in text and "score error by σ" in text
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["train_steps"] == 40 and len(ev["score_error"]) == 10 and np.isfinite(ev["delta_nll"])
    # the same folder again without --resume is refused (nothing is overwritten) ...
    assert main(args) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    # ... and an interrupted run resumed ends where an uninterrupted one does
    part = tmp_path / "part"
    base = ["train", "score", "--data", "gmm8", "--batch", "128", "--no-progress", "--eval-samples", "500",
            "--checkpoint-every", "20", "--iters", "40"]
    from sdeflow.generative.recipes import score_recipe
    from sdeflow.generative.training import Trainer

    r = score_recipe("gmm8", iters=40, batch_size=128, checkpoint_every=20)
    Trainer(r.model, r.loss, r.data, r.config, out_dir=part, metadata=r.metadata).fit(until=20)
    assert main(base + ["--out", str(part), "--resume"]) == 0
    capsys.readouterr()
    a, b = sf.load_model(out), sf.load_model(part)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # sampling the checkpoint
    assert main(["sample", "--model", str(out), "--n", "300", "--steps", "6", "--out", str(tmp_path / "s.npz"),
                 "--png", str(tmp_path / "s.png")]) == 0
    x = np.load(tmp_path / "s.npz")["x"]
    assert x.shape == (300, 2) and np.isfinite(x).all()
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["train", "score", "--iters", "0", "--out", "x"], "--iters"),
    (["train", "score", "--lr", "nan", "--out", "x"], "--lr"),
    (["train", "score", "--data", "mnist", "--out", "x"], "--data"),
])
def test_bad_train_options_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_sample_refuses_bad_input_before_work(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path), "--out", str(tmp_path / "s.npz")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["sample", "--model", str(tmp_path), "--out", str(tmp_path / "s.csv")]) == 2
    assert ".npz or .pt" in capsys.readouterr().err
    assert main(["sample", "--model", str(tmp_path), "--out", str(tmp_path / "nofolder" / "s.npz")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
    assert main(["train", "score", "--out", str(tmp_path / "f.txt"), "--json", str(tmp_path / "no" / "e.json"),
                 "--iters", "1"]) == 2
    assert "--json" in capsys.readouterr().err
