"""Consistency training runs: resume equals an uninterrupted run (target EMA included), training reduces the
self-consistency error, the recipes (CD, CT, iCT, ECT from a score model, sCM) and `sdeflow train consistency`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.cli import main
from sdeflow.consistency.exact import self_consistency_error
from sdeflow.consistency.function import ConsistencyFunction
from sdeflow.consistency.recipes import consistency_recipe
from sdeflow.generative.recipes import score_recipe
from sdeflow.generative.training import Trainer

TINY = {"hidden": 16, "depth": 1, "emb_dim": 8}


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v for k, v in trainer.model.state_dict().items()}
    for name, m in trainer.ema.items():
        out.update({f"{name}/{k}": v for k, v in m.state_dict().items()})
    return out


@pytest.mark.parametrize("mode", ["cd", "ct"])
def test_resume_equals_uninterrupted_run(tmp_path, mode):
    # CD: fixed target rate μ; CT: μ(k) set through loss.ema_beta and N(k) from the step. Both need the
    # target EMA copy and the step restored from the checkpoint to continue bitwise.
    def recipe():
        return consistency_recipe(mode, "gmm8", iters=8, batch_size=32, network=TINY, checkpoint_every=4)

    r = recipe()
    full = Trainer(r.model, r.loss, r.data, r.config)
    full.fit()
    r = recipe()
    Trainer(r.model, r.loss, r.data, r.config, out_dir=tmp_path).fit(until=4)
    r = recipe()
    resumed = Trainer(r.model, r.loss, r.data, r.config, out_dir=tmp_path, resume=True)
    assert resumed.step == 4 and resumed.loss.target_model is resumed.ema["target"]
    resumed.fit()
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys() and any(k.startswith("target/") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_reduces_self_consistency_error():
    # A short CD run (exact teacher, Heun, gmm8) must cut the error of f against the exact f* along exact
    # PF-ODE trajectories by a clear factor. At initialisation F = 0 (zero-initialised output layer), so
    # f = c_skip·x is far from f* at every level above ε; the threshold 3 is well below what 400 steps
    # reach on this seed (about 6x) and well above what an untrained or mis-signed loss gives (≤ 1).
    torch.manual_seed(0)
    r = consistency_recipe("cd", "gmm8", iters=400, batch_size=256, lr=2e-3, network={"hidden": 64, "depth": 2},
                           eval_beta=0.9)
    trainer = Trainer(r.model, r.loss, r.data, r.config)
    before = self_consistency_error(trainer.model.eval(), mixture=r.mixture, n=256, generator=0).mean_error
    trainer.fit()
    after = self_consistency_error(trainer.model.eval(), mixture=r.mixture, n=256, generator=0).mean_error
    assert after < before / 3, (before, after)


def test_recipes_build_every_mode():
    for mode in ("cd", "ct", "ict", "scm"):
        r = consistency_recipe(mode, "gmm8", iters=3, batch_size=16, network=TINY)
        assert isinstance(r.model, ConsistencyFunction)
        assert r.model.parameterization == ("trigflow" if mode == "scm" else "cm")
        tr = Trainer(r.model, r.loss, r.data, r.config)
        res = tr.fit()
        assert res.steps == 3 and all(torch.isfinite(p).all() for p in tr.model.parameters())
        assert ("target" in tr.ema) == (mode in ("cd", "ct"))
    with pytest.raises(ValueError, match="teacher"):
        consistency_recipe("ct", "gmm8", teacher="exact")
    with pytest.raises(ValueError, match="mixture"):
        consistency_recipe("cd", "moons", teacher="exact")
    with pytest.raises(ValueError, match="ect"):
        consistency_recipe("ect", "gmm8")


def test_ect_starts_from_the_score_models_network():
    score = score_recipe("gmm8", iters=2, network=TINY).model
    r = consistency_recipe("ect", "gmm8", teacher=score, iters=2, batch_size=16)
    assert r.model.sigma_data == score.sigma_data
    for (k, a), (_, b) in zip(r.model.net.state_dict().items(), score.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert all(p.requires_grad for p in r.model.net.parameters())
    assert not any(p.requires_grad for p in score.parameters())  # the teacher stays frozen
    r.model.net.inp.weight.data.add_(1.0)  # a copy, not shared
    assert not torch.equal(r.model.net.inp.weight, score.net.inp.weight)


def test_cli_train_consistency_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "consistency", "--mode", "cd", "--data", "gmm8", "--iters", "20", "--batch", "64",
            "--out", str(out), "--no-progress", "--eval-samples", "600", "--checkpoint-every", "10",
            "--json", str(tmp_path / "ev.json"), "--log-consistency"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "self-consistency error vs f* while training (EMA copy): step 2:" in text
    assert "ΔNLL 1-step" in text and "ΔNLL 2-step" in text and "pathwise RMS to f*" in text
    assert "self-consistency error" in text
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["train_steps"] == 20 and len(ev["taus"]) == 2
    model = sf.load_model(out)
    assert isinstance(model, ConsistencyFunction)
    # sdeflow sample on a consistency checkpoint: 1 step, and τ searched on the exact mixture for 2 and 3
    for steps in (1, 2, 3):
        path = tmp_path / f"s{steps}.npz"
        assert main(["sample", "--model", str(out), "--steps", str(steps), "--n", "200", "--out", str(path)]) == 0
        said = capsys.readouterr().out
        assert f"consistency, {steps} steps" in said and f"{steps} NFE" in said
        assert ("searched on the exact gmm8 mixture" in said) == (steps > 1)
        x = np.load(path)["x"]
        assert x.shape == (200, 2) and np.isfinite(x).all()
    assert main(args) == 2  # refuses to overwrite
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(["train", "consistency", "--mode", "ect", "--out", str(tmp_path / "e"), "--iters", "2"]) == 2
    assert "score model" in capsys.readouterr().err
    assert main(["train", "consistency", "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_cli_cd_with_a_learned_teacher(tmp_path, capsys):
    teacher = tmp_path / "teacher"  # a score checkpoint as `sdeflow train score` writes it (a short run)
    r = score_recipe("gmm8", iters=10, batch_size=64, network=TINY)
    Trainer(r.model, r.loss, r.data, r.config, out_dir=teacher, metadata=r.metadata).fit()
    assert main(["train", "consistency", "--mode", "cd", "--teacher", str(teacher), "--iters", "5", "--batch", "32",
                 "--out", str(tmp_path / "cd"), "--no-progress", "--eval-samples", "300"]) == 0
    assert f"teacher {teacher}" in capsys.readouterr().out
    assert main(["train", "consistency", "--mode", "ect", "--teacher", str(teacher), "--iters", "5", "--batch", "32",
                 "--out", str(tmp_path / "ect"), "--no-progress", "--eval-samples", "300"]) == 0
