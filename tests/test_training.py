"""The trainer: determinism, resume equals an uninterrupted run, EMA, schedules, checkpoints, load_model."""

import json
import math

import pytest
import torch
from torch import nn

import sdeflow as sf
from sdeflow.generative.checkpoint import CheckpointError, list_checkpoints, load_model, read_checkpoint
from sdeflow.generative.config import Configurable, register_model
from sdeflow.generative.training import EMA, TrainConfig, Trainer, lr_at


@register_model("test_tiny_denoiser")
class TinyDenoiser(Configurable, nn.Module):
    """D(x, σ) = x/(1+σ²) + net(x, log σ): enough to learn something in a few steps."""

    def __init__(self, dim: int = 2, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.record_config(dim=dim, hidden=hidden, dropout=dropout)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x, sigma, class_labels=None):
        self.calls += 1
        s = sigma.reshape(-1, 1)
        out = x / (1 + s**2) + self.net(torch.cat([x, s.log()], dim=1))
        if class_labels is not None:
            out = out + 0.0 * class_labels[:, None]
        return out * self.scale


def edm_like_loss(model, x0, *, generator=None, class_labels=None):
    b = x0.shape[0]
    sigma = torch.exp(torch.randn(b, generator=generator) * 1.2 - 0.5)
    noise = torch.randn(x0.shape, generator=generator)
    kw = {} if class_labels is None else {"class_labels": class_labels}
    den = model(x0 + sigma[:, None] * noise, sigma, **kw)
    return ((den - x0) ** 2).sum(-1)


def _data(n=512):
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 2, generator=g) * 0.5 + 1.0


def _config(**kw):
    base = dict(iters=30, batch_size=64, lr=3e-3, warmup=5, decay="cosine", grad_clip=1.0, log_every=10,
                ema=(EMA("ema", beta=0.9, warmup=1.0), EMA("slow", halflife=500.0, warmup=0.05)), seed=7)
    base.update(kw)
    return TrainConfig(**base)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyDenoiser(**kw)


def _weights(trainer):
    out = {f"model/{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for name, m in trainer.ema.items():
        out.update({f"{name}/{k}": v.clone() for k, v in m.state_dict().items()})
    return out


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_and_the_loss_falls():
    a = Trainer(_model(), edm_like_loss, _data(), _config())
    ra = a.fit()
    b = Trainer(_model(), edm_like_loss, _data(), _config())
    b.fit()
    _assert_bitwise(_weights(a), _weights(b))
    c = Trainer(_model(), edm_like_loss, _data(), _config(seed=8))
    c.fit()
    assert not torch.equal(a.model.net[0].weight, c.model.net[0].weight)
    losses = [row["loss"] for row in ra.history if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert ra.steps == 30 and ra.stopped == "iters"


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # dropout draws from torch's global generator: resume restores it too
    full = Trainer(_model(dropout=0.1), edm_like_loss, (_data(), torch.arange(512) % 3), _config(),
                   out_dir=tmp_path / "full")
    full.fit()
    part = Trainer(_model(dropout=0.1), edm_like_loss, (_data(), torch.arange(512) % 3), _config(),
                   out_dir=tmp_path / "part")
    r = part.fit(until=17)  # mid-epoch (512 / 64 = 8 steps per epoch) and mid-warm-up of the slow EMA
    assert r.stopped == "until" and r.checkpoint is not None
    torch.manual_seed(999)  # whatever happens in between
    resumed = Trainer(_model(seed=5, dropout=0.1), edm_like_loss, (_data(), torch.arange(512) % 3), _config(),
                      out_dir=tmp_path / "part", resume=True)
    assert resumed.step == 17
    resumed.fit()
    _assert_bitwise(_weights(full), _weights(resumed))
    # the optimiser state matches too
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k]))


def test_resume_from_a_sampling_function(tmp_path):
    def sample(n, generator):
        return torch.randn(n, 2, generator=generator) + 2.0

    full = Trainer(_model(), edm_like_loss, sample, _config(), out_dir=tmp_path / "a")
    full.fit()
    Trainer(_model(), edm_like_loss, sample, _config(), out_dir=tmp_path / "b").fit(until=11)
    resumed = Trainer(_model(), edm_like_loss, sample, _config(), out_dir=tmp_path / "b", resume=True)
    resumed.fit()
    _assert_bitwise(_weights(full), _weights(resumed))


def test_ema_follows_its_formula():
    cfg = _config(iters=3, ema=(EMA("e", beta=0.5),), lr=1e-2, warmup=0, decay="none", grad_clip=None)
    t = Trainer(_model(), edm_like_loss, _data(), cfg)
    snapshots = []
    ema = {k: v.clone() for k, v in t.model.state_dict().items()}
    for _ in range(3):
        t._step()
        cur = t.model.state_dict()
        ema = {k: (0.5 * ema[k] + 0.5 * cur[k]) if cur[k].is_floating_point() else cur[k].clone() for k in cur}
        snapshots.append(ema)
    for k, v in t.ema["e"].state_dict().items():
        torch.testing.assert_close(v, snapshots[-1][k])
    assert int(t.ema["e"].calls) == int(t.model.calls)  # integer buffers are copied
    # half-life form: 0.5 ** (batch / halflife); warm-up caps the half-life by r * samples seen
    spec = EMA("h", halflife=640.0)
    assert spec.beta_at(0, 64) == pytest.approx(0.5 ** 0.1)
    assert EMA("h", halflife=640.0, warmup=0.5).beta_at(0, 64) == pytest.approx(0.5 ** 2)
    assert EMA("b", beta=0.999, warmup=1).beta_at(0, 64) == pytest.approx(0.1)


def test_learning_rate_schedules():
    cfg = TrainConfig(iters=100, lr=1.0, warmup=10, decay="cosine", min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    lin = TrainConfig(iters=20, lr=2.0, decay="linear")
    assert lr_at(lin, 10) == pytest.approx(1.0)
    inv = TrainConfig(iters=20, lr=1.0, warmup=4, decay="inverse_sqrt")
    assert lr_at(inv, 15) == pytest.approx(math.sqrt(4 / 16))


def test_checkpoints_keep_the_newest_and_load_model_rebuilds_without_pickle(tmp_path):
    t = Trainer(_model(), edm_like_loss, _data(), _config(checkpoint_every=5, keep=2),
                out_dir=tmp_path, metadata={"data": "toy"})
    t.fit()
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000025.json", "ckpt-00000030.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + [n.replace(".json", ".safetensors")
                                                                         for n in names])
    meta = json.loads((tmp_path / names[-1]).read_text())
    assert meta["step"] == 30 and meta["model_config"]["kind"] == "test_tiny_denoiser" and meta["ema"] == ["ema", "slow"]
    m = load_model(tmp_path)  # the newest; EMA weights by default
    for k, v in t.ema["ema"].state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    raw = load_model(tmp_path / names[-1], weights="model")
    assert torch.equal(raw.net[0].weight, t.model.net[0].weight)
    assert not raw.training and not any(p.requires_grad for p in raw.parameters())
    assert m.checkpoint_metadata == {"data": "toy"} and m.checkpoint_step == 30
    x = torch.randn(5, 2)
    res = sf.sample_heun(m, x * 80, sf.karras_sigmas(4, 0.002, 80.0))
    assert res.x.shape == (5, 2) and torch.isfinite(res.x).all()
    with pytest.raises(ValueError, match="weights must be"):
        load_model(tmp_path, weights="nope")


def test_corrupted_or_truncated_checkpoints_are_refused_by_name(tmp_path):
    t = Trainer(_model(), edm_like_loss, _data(), _config(iters=5), out_dir=tmp_path)
    t.fit()
    jpath = list_checkpoints(tmp_path)[-1]
    wpath = jpath.with_suffix(".safetensors")
    data = wpath.read_bytes()
    wpath.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        read_checkpoint(tmp_path)
    wpath.write_bytes(data)
    jpath.write_text(jpath.read_text()[:40])
    with pytest.raises(CheckpointError, match=r"not readable JSON.*truncated or corrupted"):
        load_model(jpath)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "ckpt-00000099.json")


def test_a_killed_write_leaves_the_previous_checkpoint_and_is_cleaned(tmp_path):
    t = Trainer(_model(), edm_like_loss, _data(), _config(iters=4), out_dir=tmp_path)
    t.fit()
    stale = tmp_path / ".ckpt-00000008.safetensors.abcd.tmp"  # what a kill mid-write leaves
    stale.write_bytes(b"partial")
    assert load_model(tmp_path).checkpoint_step == 4
    t2 = Trainer(_model(), edm_like_loss, _data(), _config(iters=8), out_dir=tmp_path)
    t2.fit()
    assert not stale.exists()


def test_time_budget_and_callbacks():
    seen = []

    def cb(trainer, step):
        seen.append(step)
        return {"step_seen": step}

    t = Trainer(_model(), edm_like_loss, _data(), _config(iters=20, eval_every=5), callbacks=[cb])
    r = t.fit()
    assert seen == [5, 10, 15, 20]
    assert [row["eval"]["step_seen"] for row in r.history if "eval" in row] == [5, 10, 15, 20]
    t = Trainer(_model(), edm_like_loss, _data(), _config(iters=10**6, time_budget=0.2))
    r = t.fit()
    assert r.stopped == "time_budget" and 0 < r.steps < 10**6


def test_bf16_autocast_trains_with_float32_loss():
    t = Trainer(_model(), edm_like_loss, _data(), _config(iters=5, autocast="bf16"))
    r = t.fit()
    assert t.model.net[0].weight.dtype == torch.float32 and r.steps == 5
    assert all(math.isfinite(row["loss"]) for row in r.history if "loss" in row)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="iters"):
        TrainConfig(iters=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="exactly one of beta"):
        EMA("e")
    with pytest.raises(ValueError, match="EMA names must be distinct"):
        TrainConfig(ema=(EMA("e", beta=0.9), EMA("e", beta=0.99)))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(_model(), edm_like_loss, _data(10), _config())
    with pytest.raises(TypeError, match="data must be"):
        Trainer(_model(), edm_like_loss, "data.csv", _config())
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        Trainer(_model(), edm_like_loss, _data(), _config(), resume=True)
    with pytest.raises(ValueError, match="per-example values"):
        Trainer(_model(), lambda m, x, generator=None: ((m(x, torch.ones(x.shape[0])) - x) ** 2).mean(), _data(),
                _config()).fit()


def test_a_loss_can_bind_to_the_trainer_and_steer_an_ema_rate():
    class Bound:
        def bind(self, trainer):
            self.trainer = trainer

        def ema_beta(self, name, step):
            return 0.0 if name == "copy" else None  # "copy" follows the model exactly

        def __call__(self, model, x0, *, generator=None, **cond):
            assert self.trainer.step >= 0
            return edm_like_loss(model, x0, generator=generator, **cond)

    loss = Bound()
    t = Trainer(_model(), loss, _data(), _config(iters=3, ema=(EMA("copy", beta=0.99), EMA("avg", beta=0.99))))
    assert loss.trainer is t
    t.fit()
    for k, v in t.model.state_dict().items():
        assert torch.equal(t.ema["copy"].state_dict()[k], v)
    assert not torch.equal(t.ema["avg"].net[0].weight, t.model.net[0].weight)
