"""Checkpoint writes: each checkpoint written once with latest.pt pointing at it, --keep-checkpoints,
and a failed write (disk full, permissions) as one sentence that loses nothing older."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, tiny_args

# Runs a script's main() with the operating system refusing files over 64 kB from the `fail_at`-th
# checkpoint on (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG, "File too large"), as a full
# disk refuses them (a read-only folder does not stop root, who runs CI).
FAILING_SAVE = """
import resource, signal, sys
sys.path.insert(0, {root!r})
sys.argv = [{script!r}] + {flags!r}
import {script}
real_write, calls = {script}.write_checkpoint, []

def write_checkpoint(*args, **kwargs):
    calls.append(1)
    if len(calls) == {fail_at}:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return real_write(*args, **kwargs)

{script}.write_checkpoint = write_checkpoint
{script}.main()
"""


def cli_flags(script, tmp_path, iterations, **extra):
    settings = {
        **TINY[script.SCRIPT],
        "runs_dir": str(tmp_path / "runs"),
        "run_name": "run",
        "log_interval": 1e9,
        **extra,
    }
    batch = settings["num_envs"] * settings["num_steps"]
    flags = ["--no-cuda", "--total-timesteps", str(iterations * batch)]
    for name, value in settings.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def test_a_failed_checkpoint_write_stops_the_run_with_one_sentence_and_loses_nothing(script, tmp_path):
    flags = cli_flags(script, tmp_path, iterations=4, checkpoint_every=1)
    code = FAILING_SAVE.format(root=str(ROOT), script=script.SCRIPT, flags=flags, fail_at=2)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    folder = tmp_path / "runs" / "run" / "checkpoints"
    errors = [l for l in proc.stderr.strip().splitlines() if "Warning" not in l and "warnings.warn" not in l]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and errors[0].endswith("."), proc.stderr
    assert errors[0].startswith(f"error: could not write the checkpoint '{folder / 'iter_000002.pt'}'")
    assert errors[0].endswith(": File too large.") and "enforce" not in errors[0]  # the OS's words, not torch's
    assert sorted(p.name for p in folder.iterdir()) == ["iter_000001.pt", "latest.pt"]  # no .tmp left
    assert torch.load(folder / "latest.pt", weights_only=True)["iteration"] == 1


def test_each_checkpoint_is_written_once_and_latest_is_the_same_file(tmp_path):
    import ppo_atari

    out = ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=2, run_name="once", checkpoint_every=1))
    folder = tmp_path / "runs" / "once" / "checkpoints"
    assert out["checkpoint"] == str(folder / "iter_000002.pt")
    assert os.path.samefile(folder / "latest.pt", folder / "iter_000002.pt")
    assert os.stat(folder / "iter_000001.pt").st_nlink == 1  # latest.pt moved on to the newer file
    assert torch.load(folder / "latest.pt", weights_only=True)["iteration"] == 2


def test_latest_is_a_copy_where_hard_links_are_not_possible(tmp_path, monkeypatch):
    import ppo_atari

    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=1, run_name="copy"))
    folder = tmp_path / "runs" / "copy" / "checkpoints"
    assert not os.path.samefile(folder / "latest.pt", folder / "iter_000001.pt")
    assert (folder / "latest.pt").read_bytes() == (folder / "iter_000001.pt").read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["iter_000001.pt", "latest.pt"]


@pytest.mark.parametrize("keep,expected", [(2, [3, 4, 5]), (0, [1, 2, 3, 4, 5])])
def test_keep_checkpoints_keeps_the_newest_periodic_ones_and_the_final_one(tmp_path, keep, expected):
    import a2c_atari

    a2c_atari.train(
        tiny_args(
            a2c_atari, tmp_path, iterations=5, run_name="keep", checkpoint_every=1, keep_checkpoints=keep, eval_every=0
        )
    )
    folder = tmp_path / "runs" / "keep" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [f"iter_{i:06d}.pt" for i in expected] + ["latest.pt"]
    assert torch.load(folder / "latest.pt", weights_only=True)["iteration"] == 5
