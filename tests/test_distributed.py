"""Ensembles sharded over 2 gloo processes equal the single-process run; DDP follows one process."""

import pytest
import torch
import torch.multiprocessing as mp

import sdeflow as sf

from _dist_workers import ENSEMBLE, TS, ddp_worker, ensemble_reference, ensemble_worker, load_example


def _spawn(fn, tmp_path):
    init = tmp_path / "init"
    out = tmp_path / "out"
    mp.spawn(fn, args=(2, str(init), str(out)), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]


def test_ensemble_statistics_match_closed_form():
    st = ensemble_reference()
    ou = sf.OrnsteinUhlenbeck(1.0, 0.2, 0.5)
    x0 = torch.ones(1, 2, dtype=torch.float64)
    for k, t in enumerate(TS[1:], start=1):
        mean = ou.marginal_mean(t, x0)[0]
        # 4 standard errors of the mean of 1000 paths; Euler bias at dt = 0.01 is ~0.5% of a std.
        assert bool(((st.mean[k] - mean).abs() < 4 * st.sem[k]).all())
        var = float(ou.marginal_std(torch.tensor(t, dtype=torch.float64)) ** 2)
        # 4 standard errors of the variance: sqrt(2/(n−1)) relative for Gaussian paths.
        assert bool(((st.var[k] - var).abs() < 4 * var * (2 / 999) ** 0.5).all())
    assert st.count == 1000 and st.hist.shape == (3, 2, 24)
    assert int(st.hist[1].sum()) + int(st.outside[1].sum()) == 2000
    torch.testing.assert_close(st.density().sum(-1) * 3.0 / 24, 1.0 - st.outside.double() / 1000)


def test_merge_order_is_associative_enough_and_batches_are_independent_of_sharding():
    parts = sf.ensemble_partials(sf.OrnsteinUhlenbeck(), torch.zeros(1), TS, **ENSEMBLE)
    whole = sf.combine_partials(parts)
    again = sf.combine_partials(sf.ensemble_partials(sf.OrnsteinUhlenbeck(), torch.zeros(1), TS,
                                                     batches=[3, 4], **ENSEMBLE))
    torch.testing.assert_close(again.mean, sf.combine_partials(parts[3:5]).mean, rtol=0, atol=0)
    assert whole.count == 1000


def test_two_gloo_processes_give_the_single_process_ensemble(tmp_path):
    ref = ensemble_reference()
    outs = _spawn(ensemble_worker, tmp_path)
    for o in outs:  # every rank holds the full result, bit for bit
        assert o["count"] == ref.count
        assert torch.equal(o["mean"], ref.mean) and torch.equal(o["m2"], ref.m2)
        assert torch.equal(o["hist"], ref.hist) and torch.equal(o["outside"], ref.outside)


def test_ddp_loss_curve_equals_one_process_with_the_same_global_batch(tmp_path):
    # (No torch.set_num_threads here: changing it in the pytest process slows every later test.)
    losses, model = load_example("ddp_score_matching").train(steps=25, global_batch=64, seed=4)
    outs = _spawn(ddp_worker, tmp_path)
    for o in outs:
        # Gradients are all-reduced in a different summation order: agreement to float32 round-off.
        torch.testing.assert_close(o["losses"], torch.tensor(losses), rtol=1e-5, atol=1e-6)
        for p, q in zip(o["params"], model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]


def test_shard_and_rank_generator():
    from sdeflow import distributed as sfd

    x = torch.arange(8)
    assert sfd.shard(x, rank=1, world_size=2).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="does not split evenly"):
        sfd.shard(torch.arange(7), rank=0, world_size=2)
    a = torch.randn(3, generator=sfd.rank_generator(1, rank=0))
    b = torch.randn(3, generator=sfd.rank_generator(1, rank=1))
    assert not torch.equal(a, b)
    assert torch.equal(a, torch.randn(3, generator=sfd.rank_generator(1, rank=0)))
