"""A run that goes wrong loses nothing: a non-finite update stops the run before anything from it is
saved, and a run folder the file system refuses is one sentence before anything is built."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, tiny_args

LOSS = {"ppo_atari": "ppo_loss", "a2c_atari": "a2c_loss", "a2c_lstm_atari": "a2c_loss"}

# Makes the returns NaN in the loss of every update from the `start`-th on (the value loss, the loss
# and then the gradient turn NaN, as a learning rate typed 10x too large makes them); `calls` is the
# number of loss calls per update.
INJECT = """
def inject(module, start, calls):
    real, seen = getattr(module, {loss!r}), []

    def loss_fn(*args, **kwargs):
        seen.append(1)
        if (len(seen) - 1) // calls + 1 >= start:
            if "returns" in kwargs:
                kwargs["returns"] = kwargs["returns"] * float("nan")
            else:
                args = list(args)
                args[4] = args[4] * float("nan")
        return real(*args, **kwargs)

    setattr(module, {loss!r}, loss_fn)
"""

DRIVER = """
import sys
sys.path.insert(0, {root!r})
sys.argv = [{script!r}] + {flags!r}
import {script}
{inject}
inject({script}, {start}, {calls})
{script}.main()
"""


def loss_calls_per_update(name):
    settings = TINY[name]
    return settings.get("update_epochs", 1) * settings.get("num_minibatches", 1)


def inject(module, monkeypatch, start):
    namespace, loss = {}, LOSS[module.SCRIPT]
    exec(INJECT.format(loss=loss), namespace)
    real = getattr(module, loss)
    namespace["inject"](module, start, loss_calls_per_update(module.SCRIPT))
    injected = getattr(module, loss)
    setattr(module, loss, real)
    monkeypatch.setattr(module, loss, injected)  # the real one is back after the test


def test_a_non_finite_update_is_never_saved_and_the_run_resumes_from_the_last_finite_checkpoint(
    script, tmp_path, monkeypatch
):
    name = script.SCRIPT
    batch = TINY[name]["num_envs"] * TINY[name]["num_steps"]
    flags = ["--no-cuda", "--total-timesteps", str(4 * batch), "--runs-dir", str(tmp_path / "runs")]
    flags += ["--run-name", "run", "--checkpoint-every", "1", "--eval-every", str(2 * batch), "--eval-episodes", "1"]
    for key, value in TINY[name].items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    code = DRIVER.format(
        root=str(ROOT),
        script=name,
        flags=flags,
        inject=INJECT.format(loss=LOSS[name]),
        start=3,
        calls=loss_calls_per_update(name),
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    folder = tmp_path / "runs" / "run" / "checkpoints"

    # One sentence naming the iteration, the step and the figure; exit status 1.
    errors = [
        line for line in proc.stderr.strip().splitlines() if "Warning" not in line and "warnings.warn" not in line
    ]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and errors[0].endswith("."), proc.stderr
    assert errors[0].startswith(f"error: iteration 3 (step {3 * batch:,}) made the loss nan;"), errors[0]
    assert f"'{folder / 'latest.pt'}' is the last finite checkpoint" in errors[0]

    # Nothing from the NaN update on; latest.pt and best.pt at the last finite checkpoint, whose weights are finite.
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "iter_000001.pt", "iter_000002.pt", "latest.pt"]
    assert os.path.samefile(folder / "latest.pt", folder / "iter_000002.pt")
    assert os.path.samefile(folder / "best.pt", folder / "iter_000002.pt")
    latest = torch.load(folder / "latest.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in latest["model"].values())

    # A resume that diverges at the run's last update: no final checkpoint either, and train() says why.
    inject(script, monkeypatch, start=2)  # the resume's second update is iteration 4, the last
    resume = tiny_args(
        script, tmp_path, iterations=4, run_name="run", resume=str(tmp_path / "runs" / "run"), checkpoint_every=1
    )
    with pytest.raises(script.Diverged, match=rf"^iteration 4 \(step {4 * batch:,}\) made the loss nan;"):
        script.train(resume)
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.pt",
        "iter_000001.pt",
        "iter_000002.pt",
        "iter_000003.pt",
        "latest.pt",
    ]
    assert os.path.samefile(folder / "latest.pt", folder / "iter_000003.pt")

    # Without the fault the resume goes on from the last finite checkpoint to the end.
    monkeypatch.undo()
    out = script.train(tiny_args(script, tmp_path, iterations=4, run_name="run", resume=str(folder / "latest.pt")))
    assert out["global_step"] == 4 * batch
    final = torch.load(folder / "latest.pt", weights_only=True)
    assert final["iteration"] == 4 and all(torch.isfinite(w).all() for w in final["model"].values())


def test_the_gradient_norm_before_clipping_is_logged_and_checked(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import ppo_atari

    real, norms = ppo_atari.nn.utils.clip_grad_norm_, []
    monkeypatch.setattr(ppo_atari.nn.utils, "clip_grad_norm_", lambda *a, **k: norms.append(real(*a, **k)) or norms[-1])
    ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=2, run_name="logged"))
    acc = EventAccumulator(str(tmp_path / "runs" / "logged"))
    acc.Reload()
    logged = [e.value for e in acc.Scalars("losses/grad_norm")]
    half = len(norms) // 2  # each iteration's minibatches: the logged figure is their mean, before clipping
    assert len(logged) == 2 and half > 1 and max(norms) > 0.5  # beyond --max-grad-norm: clipping happened
    assert logged == pytest.approx([torch.stack(norms[:half]).mean().item(), torch.stack(norms[half:]).mean().item()])

    monkeypatch.undo()
    monkeypatch.setattr(ppo_atari.nn.utils, "clip_grad_norm_", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(
        ppo_atari.Diverged,
        match=r"^iteration 1 \(step 32\) made the gradient norm before "
        r"clipping inf; nothing from it on was saved and no checkpoint",
    ):
        ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=2, run_name="inf"))
    assert not (tmp_path / "runs" / "inf" / "checkpoints").exists()


@pytest.mark.parametrize("case", ["runs-dir is a file", "run folder is a file", "runs-dir cannot be made"])
def test_a_run_folder_the_file_system_refuses_is_one_sentence_before_anything_is_built(
    script, tmp_path, monkeypatch, case
):
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "afile").write_text("a file")
    flags, reason = {
        "runs-dir is a file": (dict(runs_dir=str(tmp_path / "notes.txt")), "Not a directory"),
        "run folder is a file": (dict(runs_dir=str(tmp_path / "runs"), run_name="afile"), "File exists"),
        "runs-dir cannot be made": (dict(runs_dir="/proc/x"), "No such file or directory"),
    }[case]

    def built(*args, **kwargs):
        raise AssertionError("envs or a model were built before the run folder was made")

    monkeypatch.setattr(script, "EnvGroups", built)
    monkeypatch.setattr(script, "Agent", built)
    with pytest.raises(script.UsageError, match=rf"^cannot make the run folder '.*': {reason}\.$"):
        script.train(tiny_args(script, tmp_path, **flags))


TORCHRUN_DRIVER = """
import os, sys
sys.path.insert(0, {root!r})
import ppo_atari
{inject}
if os.environ["RANK"] == "1":  # one process's loss alone turns NaN: the summed gradient carries it to both
    inject(ppo_atari, 3, {calls})
sys.argv = ["ppo_atari.py"] + {flags!r}
ppo_atari.main()
"""


def test_under_torchrun_every_process_stops_at_the_same_non_finite_update_and_none_hangs(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = dict(TINY["ppo_atari"], num_envs=4)
    batch = settings["num_envs"] * settings["num_steps"]
    flags = ["--no-cuda", "--total-timesteps", str(5 * batch), "--runs-dir", str(tmp_path / "runs")]
    flags += ["--run-name", "run", "--checkpoint-every", "1", "--eval-every", "0", "--log-interval", "1e9"]
    for key, value in settings.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    driver = tmp_path / "driver.py"
    driver.write_text(
        TORCHRUN_DRIVER.format(
            root=str(ROOT), inject=INJECT.format(loss="ppo_loss"), calls=loss_calls_per_update("ppo_atari"), flags=flags
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d"]
    cmd += [f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=nan", "--max-restarts=0", "--monitor-interval=0.5"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, str(driver)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # a hang: no worker is left behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    sentence = f"error: iteration 3 (step {3 * batch:,}) made the loss nan;"
    assert proc.returncode != 0 and stderr.count(sentence) == 2, stderr[-3000:]
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["iter_000001.pt", "iter_000002.pt", "latest.pt"]
