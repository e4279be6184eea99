"""The digits split: sizes, stratification, determinism, scales."""

import hashlib

import pytest
import torch
from sklearn.datasets import load_digits

from sdeflow.latent import DigitsSplit, from_pixels, load_digits_split, to_pixels


def test_default_split_sizes_shapes_and_stratification():
    s = load_digits_split()
    assert isinstance(s, DigitsSplit)
    assert s.train_x.shape == (1438, 1, 8, 8) and s.test_x.shape == (359, 1, 8, 8)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert float(s.train_x.min()) == -1.0 and float(s.train_x.max()) == 1.0
    # disjoint, covering every image once
    both = torch.cat([s.train_index, s.test_index])
    assert torch.equal(both.sort().values, torch.arange(1797))
    # stratified: each class's held-out share within one image of 0.2·n_c (largest remainder rounding)
    n_c = torch.bincount(torch.cat([s.train_y, s.test_y]))
    held = torch.bincount(s.test_y, minlength=10)
    assert int(held.sum()) == 359
    assert bool(((held - 359 * n_c / 1797).abs() < 1).all())
    # the images are load_digits()'s, in its order within each part
    raw = load_digits()
    assert torch.equal(s.test_y, torch.from_numpy(raw.target)[s.test_index])
    assert torch.equal(to_pixels(s.test_x[:, 0]).double(), torch.from_numpy(raw.images)[s.test_index])
    assert bool((s.train_index.diff() > 0).all()) and bool((s.test_index.diff() > 0).all())


def test_split_is_a_pure_function_of_the_seed():
    a, b = load_digits_split(), load_digits_split()
    assert torch.equal(a.test_index, b.test_index) and torch.equal(a.train_x, b.train_x)
    assert a.fingerprint() == b.fingerprint()
    # the documented rule: within each class the held-out images are those of smallest sha256("seed:index")
    y = torch.cat([a.train_y, a.test_y])[torch.cat([a.train_index, a.test_index]).argsort()]
    c = 3
    members = torch.nonzero(y == c).squeeze(1).tolist()
    k = int((a.test_y == c).sum())
    ranked = sorted(members, key=lambda i: hashlib.sha256(f"0:{i}".encode()).digest())
    assert sorted(ranked[:k]) == a.test_index[a.test_y == c].tolist()
    other = load_digits_split(seed=1)
    assert not torch.equal(other.test_index, a.test_index) and other.fingerprint() != a.fingerprint()
    # fresh tensors: editing one result leaves the next call unchanged
    a.train_x.zero_()
    assert torch.equal(load_digits_split().train_x, b.train_x)


def test_fixed_count_and_scales():
    s = load_digits_split(held_out=500)
    assert s.test_x.shape[0] == 500 and s.train_x.shape[0] == 1297
    u = load_digits_split(scale="[0,1]")
    r = load_digits_split(scale="raw")
    d = load_digits_split()
    assert float(u.train_x.max()) == 1.0 and float(u.train_x.min()) == 0.0
    assert torch.equal(r.train_x, to_pixels(d.train_x)) and torch.equal(r.train_x, to_pixels(u.train_x, "[0,1]"))
    assert torch.equal(from_pixels(r.train_x), d.train_x) and torch.equal(to_pixels(r.train_x, "raw"), r.train_x)
    assert torch.equal(r.train_x, r.train_x.round())  # integer pixel values 0..16


def test_errors():
    with pytest.raises(ValueError, match="scale"):
        load_digits_split(scale="0-255")
    with pytest.raises(ValueError, match="fraction"):
        load_digits_split(held_out=1.5)
    with pytest.raises(ValueError, match="count"):
        load_digits_split(held_out=5)
    with pytest.raises(TypeError, match="held_out"):
        load_digits_split(held_out="20%")
    with pytest.raises(ValueError, match="seed"):
        load_digits_split(seed=-1)
