"""Reliability of the CLI, the atomic writes and the checkpoints (issue 13).

* every bad option value of every command ends in one line naming the option, exit status 2, no
  traceback; output paths are checked before the run;
* Ctrl-C (SIGINT) exits 130 and SIGTERM 143 with one line; no temporary file is left; a writer killed
  with SIGKILL leaves one that the next write to the same file removes;
* ``--threads`` is set once at start-up, the default follows the documented rule, the timing lines
  print the thread count and the load average;
* atomic_write follows symlinks (the target is replaced, the link kept) and fsyncs the folder after
  the rename;
* damaged checkpoints are refused by name; a training run killed with SIGKILL at a random moment
  resumes from its last complete checkpoint and ends bitwise equal to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sdeflow.cli import build_parser, main
from sdeflow.commands import _common
from sdeflow.generative.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from sdeflow.io import atomic_write, check_writable, clean_stale_temporaries, load_arrays, save_arrays

REPO = Path(__file__).resolve().parents[1]


def _run_main(argv, capsys):
    """main(argv) -> (status, stdout, stderr), whether the parser exits or the command returns."""
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


BAD = [
    (["simulate", "--dt", "0"], "--dt"),
    (["simulate", "--dt", "nan"], "--dt"),
    (["simulate", "--dt", "inf"], "--dt"),
    (["simulate", "--dt", "-1e-3"], "--dt"),
    (["simulate", "--dt", "abc"], "--dt"),
    (["simulate", "--dt", "1e-12"], "--dt"),
    (["simulate", "--paths", "0"], "--paths"),
    (["simulate", "--paths", "1.5"], "--paths"),
    (["simulate", "--paths", str(10**13)], "--paths"),
    (["simulate", "--n-save", str(10**10)], "--n-save"),
    (["simulate", "--n-save", "1"], "--n-save"),
    (["simulate", "--dim", "-2"], "--dim"),
    (["simulate", "--x0", "nan"], "--x0"),
    (["simulate", "--t1", "inf"], "--t1"),
    (["simulate", "--t1", "0"], "--t1"),
    (["simulate", "--seed", "-1"], "--seed"),
    (["simulate", "--device", "foo"], "--device"),
    (["simulate", "--device", "cuda:99"], "--device"),
    (["simulate", "--threads", "0"], "--threads"),
    (["simulate", "--threads", "many"], "--threads"),
    (["simulate", "--param", "theta=nan"], "--param"),
    (["simulate", "--param", "theta"], "--param"),
    (["simulate", "--param", "theta=-1"], "--param"),
    (["simulate", "--sde", "nope"], "--sde"),
    (["simulate", "--dtype", "float16"], "--dtype"),
    (["simulate", "--out", "/nonexistent-folder/x.npz"], "--out"),
    (["simulate", "--out", "x.csv"], "--out"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--device", "foo"], "--device"),
    (["bench", "--threads", "-3"], "--threads"),
    (["verify", "--json", "/nonexistent-folder/r.json"], "--json"),
    (["verify", "--seed", "x"], "--seed"),
    (["verify", "--device", "tpu"], "--device"),
    (["verify", "--threads", "0"], "--threads"),
    (["verify", "--only", "no-such-check-anywhere"], "--only"),
    (["sample", "--model", "m", "--out", "s.npz", "--steps", "0"], "--steps"),
    (["sample", "--model", "m", "--out", "s.npz", "--n", "nan"], "--n"),
    (["sample", "--model", "m", "--out", "s.npz", "--sigma-min", "0"], "--sigma-min"),
    (["sample", "--model", "m", "--out", "s.npz", "--sigma-max", "inf"], "--sigma-max"),
    (["sample", "--model", "m", "--out", "s.npz", "--guidance", "nan"], "--guidance"),
    (["sample", "--model", "m", "--out", "s.npz", "--device", "foo"], "--device"),
    (["sample", "--model", "m", "--out", "s.txt"], "--out"),
    (["sample", "--model", "m", "--out", "s.npz", "--png", "/nonexistent-folder/p.png"], "--png"),
    (["sample", "--model", "m", "--out", "s.npz", "--sampler", "nope"], "--sampler"),
    (["train", "score", "--out", "o", "--iters", "0"], "--iters"),
    (["train", "score", "--out", "o", "--lr", "inf"], "--lr"),
    (["train", "score", "--out", "o", "--device", "foo"], "--device"),
    (["train", "score", "--out", "o", "--threads", "0"], "--threads"),
    (["train", "score", "--out", "o", "--batch", str(10**13)], "--batch"),
    (["train", "score", "--out", "o", "--eval-samples", str(10**14)], "--eval-samples"),
    (["train", "score", "--out", "o", "--checkpoint-every", "-5"], "--checkpoint-every"),
    (["train", "consistency", "--out", "o", "--batch", str(10**13)], "--batch"),
    (["train", "latent", "--out", "o", "--w-min", "nan"], "--w-min"),
    (["train", "latent", "--out", "o", "--eval-seeds", "-1"], "--eval-seeds"),
    (["demo", "--threads", "0"], "--threads"),
    (["train", "score", "--out", "o", "--seed", str(10**30)], "--seed"),
    (["simulate", "--seed", str(2**63)], "--seed"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_every_bad_value_is_one_line_naming_the_option_and_exit_2(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tick = time.perf_counter()
    code, out, err = _run_main(argv, capsys)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert option in lines[0] and "error" in lines[0]
    assert "Traceback" not in err and out == ""  # refused before any work was printed
    assert time.perf_counter() - tick < 20.0
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_real_process_exits_2_without_a_traceback():
    # one refused by the parser, one by the check after parsing (each process pays torch's import)
    for argv in (["simulate", "--dt", "0"], ["bench", "--device", "foo"]):
        proc = subprocess.run([sys.executable, "-m", "sdeflow.cli", *argv], capture_output=True, text=True,
                              cwd=REPO, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_lists_only_commands_that_exist(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    listed = [c.dest for c in sub._choices_actions]
    assert listed and set(listed) == set(sub.choices)
    for name in listed:
        code, out, _ = _run_main([name, "--help"], capsys)
        assert code == 0 and name in out
    text = parser.format_help()
    for word in ("demo", "simulate", "train", "sample", "bench", "verify"):
        assert (word in text) == (word in sub.choices)


def test_output_paths_are_checked_before_the_run(capsys, tmp_path, monkeypatch):
    import sdeflow.commands.simulate as cmd

    calls = []
    monkeypatch.setattr(cmd, "simulate", lambda *a, **k: calls.append(1))
    code, _, err = _run_main(["simulate", "--paths", "10", "--out", str(tmp_path / "no" / "x.npz")], capsys)
    assert code == 2 and "--out" in err and calls == []
    (tmp_path / "adir.npz").mkdir()
    code, _, err = _run_main(["simulate", "--paths", "10", "--out", str(tmp_path / "adir.npz")], capsys)
    assert code == 2 and "folder" in err and calls == []


def test_threads_are_set_once_and_printed_with_the_load_average(capsys, monkeypatch, tmp_path):
    calls = []
    real = torch.set_num_threads
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    try:
        code, out, _ = _run_main(["simulate", "--paths", "50", "--dt", "0.01", "--threads", "1",
                                  "--out", str(tmp_path / "o.npz")], capsys)
        assert code == 0
        assert len(calls) <= 1 and torch.get_num_threads() == 1
        assert "threads 1, load average" in out
        assert load_arrays(tmp_path / "o.npz")["xs"].shape == (2, 50, 1)
    finally:
        real(before)


def test_default_threads_rule():
    assert _common.default_threads({"OMP_NUM_THREADS": "3"}, cores=8, load=0.0) == (3, "$OMP_NUM_THREADS")
    assert _common.default_threads({"SDEFLOW_THREADS": "2", "OMP_NUM_THREADS": "3"}, 8, 0.0)[0] == 2
    assert _common.default_threads({"OMP_NUM_THREADS": "zero"}, cores=2, load=0.0)[0] == 2  # ignored: not an int
    # a loaded 2-core machine (the case) gets one thread; an idle one both cores; never more than 4
    assert _common.default_threads({}, cores=2, load=1.9)[0] == 1
    assert _common.default_threads({}, cores=2, load=5.0)[0] == 1
    assert _common.default_threads({}, cores=2, load=0.1)[0] == 2
    assert _common.default_threads({}, cores=64, load=0.0)[0] == 4


_SLOW_RUN = ["simulate", "--paths", "2000", "--dim", "4", "--dt", "1e-6", "--t1", "20", "--no-progress"]
# (Ctrl-C while Python is still importing torch, before sdeflow.cli.main runs, shows Python's own
# KeyboardInterrupt: the console script imports the package first.)


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_term_print_one_line_and_leave_no_temporaries(tmp_path, sig, code, word):
    out = tmp_path / "x.npz"
    # the process imports the CLI, says so, then runs the command (2e7 steps: minutes) and is signalled. It
    # first restores Python's Ctrl-C handler: a test run started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then keeps it ignored, as a terminal's background job should
    code_ = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from sdeflow.cli import main; print('ready', flush=True); "
             f"sys.exit(main({_SLOW_RUN + ['--out', str(out)]!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code_], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failed run must not leave a minutes-long simulation behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_removes_its_temporary(tmp_path):
    target = tmp_path / "a.npz"

    def write(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []


def test_a_sigkilled_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "data.npz"
    save_arrays(target, {"x": torch.zeros(3)})
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from sdeflow.io import atomic_write
        def write(tmp):
            Path(tmp).write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(600)
        atomic_write({str(target)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and f".{proc.pid}-" in stale[0].name
    assert torch.equal(load_arrays(target)["x"], torch.zeros(3))  # the old file is intact
    # a temporary of a live writer (this process) is kept; the dead writer's is removed
    live = tmp_path / f".data.npz.{os.getpid()}-abc123.tmp"
    live.write_bytes(b"busy")
    save_arrays(target, {"x": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data.npz", live.name])
    assert torch.equal(load_arrays(target)["x"], torch.ones(3))
    assert clean_stale_temporaries(target) == []


def test_atomic_write_follows_a_symlink_and_keeps_it(tmp_path):
    real = tmp_path / "real" / "out.npz"
    real.parent.mkdir()
    save_arrays(real, {"x": torch.zeros(2)})
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    save_arrays(link, {"x": torch.ones(2)})
    assert link.is_symlink() and Path(os.readlink(link)) == real
    assert torch.equal(load_arrays(real)["x"], torch.ones(2))
    assert [p.name for p in real.parent.iterdir()] == ["out.npz"]  # the temporary lived beside the target
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "real" / "new.npz")
    save_arrays(dangling, {"x": torch.ones(1)})
    assert dangling.is_symlink() and (tmp_path / "real" / "new.npz").is_file()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write(tmp_path / "real", lambda tmp: None)
    with pytest.raises(ValueError, match="is a folder"):
        check_writable(tmp_path / "real")


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    import sdeflow.io as sio

    order = []
    real_replace = os.replace
    monkeypatch.setattr(sio.os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b)))
    monkeypatch.setattr(sio, "_fsync_dir", lambda folder: order.append(("fsync_dir", Path(folder))))
    atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("hi"))
    assert order == ["replace", ("fsync_dir", tmp_path)]


def test_load_arrays_names_a_damaged_file(tmp_path):
    p = tmp_path / "a.npz"
    save_arrays(p, {"x": torch.arange(100.0)})
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"a\.npz.*truncated"):
        load_arrays(p)
    q = tmp_path / "b.pt"
    q.write_bytes(b"")
    with pytest.raises(ValueError, match=r"b\.pt"):
        load_arrays(q)
    with pytest.raises(ValueError, match="missing"):
        load_arrays(tmp_path / "c.pt")


# -- checkpoints --------------------------------------------------------------------------------------

def _checkpoint(tmp_path):
    return save_checkpoint(tmp_path, 5, {"model/w": torch.arange(6.0).reshape(2, 3)}, {"note": "x"})


def test_a_truncated_json_is_refused_by_name(tmp_path):
    j = _checkpoint(tmp_path)
    j.write_text(j.read_text()[:20])
    with pytest.raises(CheckpointError, match=r"ckpt-00000005\.json.*truncated"):
        read_checkpoint(tmp_path)


def test_a_wrong_checksum_is_refused_by_name(tmp_path):
    j = _checkpoint(tmp_path)
    w = tmp_path / "ckpt-00000005.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the tensor bytes
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ckpt-00000005\.safetensors.*checksum"):
        read_checkpoint(j)


def test_missing_weights_are_refused_by_name(tmp_path):
    j = _checkpoint(tmp_path)
    (tmp_path / "ckpt-00000005.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(j)


def test_a_safetensors_header_that_lies_is_refused(tmp_path):
    import hashlib

    j = _checkpoint(tmp_path)
    w = tmp_path / "ckpt-00000005.safetensors"
    raw = w.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["model/w"]["data_offsets"] = [0, 10**9]  # claims a GB of data the file does not have
    text = json.dumps(header).encode()
    w.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    meta = json.loads(j.read_text())
    meta["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()  # the checksum matches the lying file
    j.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"cannot be read as safetensors"):
        read_checkpoint(j)


def test_a_directory_given_as_a_checkpoint_file_is_refused(tmp_path):
    (tmp_path / "ckpt-00000001.json").mkdir()
    with pytest.raises(CheckpointError, match=r"ckpt-00000001\.json' is a folder, not a checkpoint file"):
        read_checkpoint(tmp_path / "ckpt-00000001.json")
    with pytest.raises(CheckpointError, match="no checkpoint"):  # a folder named like a JSON is not a checkpoint
        read_checkpoint(tmp_path)
    j = _checkpoint(tmp_path / "b")
    (tmp_path / "b" / "ckpt-00000005.safetensors").unlink()
    (tmp_path / "b" / "ckpt-00000005.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(j)


def test_a_weights_name_outside_the_folder_is_refused(tmp_path):
    j = _checkpoint(tmp_path)
    meta = json.loads(j.read_text())
    meta["weights"] = "../elsewhere.safetensors"
    j.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="file name beside the JSON"):
        read_checkpoint(j)


def test_saving_a_checkpoint_over_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "store"
    real.mkdir()
    ckpts = tmp_path / "run"
    ckpts.mkdir()
    (ckpts / "ckpt-00000005.json").symlink_to(real / "meta.json")
    save_checkpoint(ckpts, 5, {"model/w": torch.ones(2)}, {})
    assert (ckpts / "ckpt-00000005.json").is_symlink() and (real / "meta.json").is_file()
    tensors, meta = read_checkpoint(ckpts)
    assert meta["step"] == 5 and torch.equal(tensors["model/w"], torch.ones(2))


# -- kill -9 during training, then resume ------------------------------------------------------------

_TRAINING = textwrap.dedent("""
    import torch
    from torch import nn
    from sdeflow.generative.training import EMA, TrainConfig, Trainer

    torch.set_num_threads(1)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))

        def forward(self, x, sigma):
            return x / (1 + sigma[:, None] ** 2) + self.net(torch.cat([x, sigma[:, None].log()], 1))

    def loss(model, x0, *, generator=None):
        sigma = torch.exp(torch.randn(x0.shape[0], generator=generator) - 0.5)
        noise = torch.randn(x0.shape, generator=generator)
        return ((model(x0 + sigma[:, None] * noise, sigma) - x0) ** 2).sum(-1)

    def make(out, resume=False):
        torch.manual_seed(0)
        data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
        cfg = TrainConfig(iters=400, batch_size=32, lr=2e-3, warmup=10, decay="cosine", seed=3,
                          checkpoint_every=9, keep=2, log_every=0, ema=(EMA("ema", beta=0.95),))
        return Trainer(Tiny(), loss, data, cfg, out_dir=out, resume=resume)
""")


def test_resume_after_sigkill_at_a_random_moment_equals_an_uninterrupted_run(tmp_path):
    scope: dict = {}
    exec(_TRAINING, scope)  # noqa: S102 - the same code the killed subprocess ran
    before = torch.get_num_threads()
    killed = tmp_path / "killed"
    child = _TRAINING + f"\nmake({str(killed)!r}).fit()\n"
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list(killed.glob("ckpt-*.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(random.Random(13).uniform(0.0, 0.4))  # a random moment after the first checkpoint
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    try:
        resumed = scope["make"](killed, resume=True)
        start = resumed.step
        assert 0 < start < 400 and start % 9 == 0
        resumed.fit()
        full = scope["make"](tmp_path / "full")
        full.fit()
    finally:
        torch.set_num_threads(before)
    for a, b in ((full.model, resumed.model), (full.ema["ema"], resumed.ema["ema"])):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]  # the kill's leftovers were removed
    assert read_checkpoint(killed)[1]["step"] == 400


def test_sample_refuses_a_batch_that_cannot_fit_and_saves_the_status(tmp_path, capsys):
    import sdeflow as sf

    net = sf.MLPNet(dim=2, hidden=8, depth=1, emb_dim=8, seed=0)
    trainer = sf.Trainer(sf.EDMPrecond(net), lambda m, x, generator=None: (m(x, torch.ones(x.shape[0])) ** 2).sum(-1),
                         torch.randn(16, 2), sf.TrainConfig(iters=1, batch_size=8), out_dir=tmp_path / "m")
    trainer.fit()
    code, out, err = _run_main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.npz"),
                                "--n", str(10**13)], capsys)
    assert code == 2 and "--n" in err and "would need" in err and not (tmp_path / "s.npz").exists()
    code, out, err = _run_main(["sample", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "s.npz"),
                                "--n", "5", "--steps", "3", "--threads", "1"], capsys)
    assert code == 0 and "threads 1, load average" in out
    saved = load_arrays(tmp_path / "s.npz")
    assert saved["x"].shape == (5, 2) and saved["status"].tolist() == [0] * 5


def test_no_option_takes_a_raw_float():
    """A plain ``type=float`` lets nan and inf through; every number goes through a checked type."""
    import argparse

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            else:
                yield " ".join(path), action

    raw = [(cmd, a.option_strings) for cmd, a in walk(build_parser(), ["sdeflow"]) if a.type is float]
    assert raw == []
