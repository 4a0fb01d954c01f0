"""The script contract, checked on every training script: import without side effects, --help,
bad input as one sentence, runs/<run_name>/ layout, checkpoints, resume, seeding, signals."""

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import BACKENDS, ROOT, TINY, tiny_args


def run_cli(script_name, *flags, cwd, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / f"{script_name}.py"), *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_sentence_error(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if "Warning" not in l and "warnings.warn" not in l]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), proc.stderr
    return lines[0]


def test_import_has_no_side_effects(script, tmp_path):
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {script.SCRIPT}"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def field_help(script):
    """{field: the help comment on its line} from the source of the script's Args."""
    source = (ROOT / f"{script.SCRIPT}.py").read_text()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Args")
    lines = source.splitlines()
    return {
        node.target.id: " ".join(lines[node.lineno - 1].split("  # ", 1)[1].split())
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and "  # " in lines[node.lineno - 1]
    }


def test_help_documents_every_flag(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"{script.SCRIPT}.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 0
    help_text = " ".join(proc.stdout.replace("│", " ").split())
    docs = field_help(script)
    assert docs.keys() == {f.name for f in dataclasses.fields(script.Args)}  # every field has its help
    for name, doc in docs.items():
        assert f"--{name.replace('_', '-')}" in help_text, name
        assert doc in help_text, (name, doc)


BAD_FLAGS = [
    (["--env-id", "NotAGame-v5"], "not an Atari game"),
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--num-steps", "-3"], "--num-steps must be positive"),
    (["--total-timesteps", "0"], "--total-timesteps must be positive"),
    (["--gamma", "1.5"], "--gamma must lie in"),
    (["--sticky-actions", "2"], "--sticky-actions must lie in"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints must not be negative"),
    (["--resume", "does/not/exist.pt"], "does not exist"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_bad_flags_fail_with_one_sentence_before_building_anything(script, tmp_path, flags, message):
    proc = run_cli(script.SCRIPT, *flags, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert message in one_sentence_error(proc)
    assert not (tmp_path / "runs").exists()


def test_minibatches_must_divide_the_batch(tmp_path):
    proc = run_cli(
        "ppo_atari",
        "--num-envs",
        "3",
        "--num-steps",
        "5",
        "--num-minibatches",
        "4",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert "must be divisible by --num-minibatches" in one_sentence_error(proc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoke_training_writes_the_run_folder(script, tmp_path, backend):
    args = tiny_args(script, tmp_path, iterations=2, env_backend=backend, run_name="smoke")
    out = script.train(args)
    run_dir = tmp_path / "runs" / "smoke"
    assert out["run_dir"] == str(run_dir)
    assert out["global_step"] == 2 * args.num_envs * args.num_steps and out["sps"] > 0
    assert json.loads((run_dir / "args.json").read_text())["env_backend"] == backend
    assert list(run_dir.glob("events.out.tfevents.*"))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["iter_000002.pt", "latest.pt"]  # atomic writes leave no .tmp behind
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["script"] == script.SCRIPT and state["iteration"] == 2
    assert state["global_step"] == out["global_step"]
    assert {"args", "model", "optimizer", "rng", "num_actions"} <= state.keys()
    assert state["args"]["env_id"] == args.env_id


def test_tensorboard_tags_follow_cleanrl(script, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    num_steps = TINY[script.SCRIPT]["num_steps"]
    args = tiny_args(script, tmp_path, iterations=2, run_name="tags", max_episode_frames=4 * num_steps)
    script.train(args)
    acc = EventAccumulator(str(tmp_path / "runs" / "tags"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "charts/learning_rate",
        "losses/value_loss",
        "losses/policy_loss",
        "losses/entropy",
        "losses/explained_variance",
    }
    assert expected <= tags
    assert [e.step for e in acc.Scalars("charts/SPS")] == [args.num_envs * args.num_steps * i for i in (1, 2)]


def test_same_seed_gives_identical_weights_on_each_backend(script, tmp_path):
    for backend in BACKENDS:
        weights = []
        for name in ("a", "b"):
            args = tiny_args(script, tmp_path, iterations=2, env_backend=backend, run_name=f"{backend}-{name}", seed=7)
            script.train(args)
            weights.append(
                torch.load(tmp_path / "runs" / args.run_name / "checkpoints" / "latest.pt", weights_only=True)["model"]
            )
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), backend
    args = tiny_args(script, tmp_path, iterations=2, run_name="other-seed", seed=8)
    script.train(args)
    other = torch.load(tmp_path / "runs" / "other-seed" / "checkpoints" / "latest.pt", weights_only=True)["model"]
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)


def test_resume_continues_iteration_step_schedule_and_log_axis(script, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = tiny_args(script, tmp_path, iterations=2, run_name="run")
    batch = first.num_envs * first.num_steps
    script.train(dataclasses.replace(first, total_timesteps=4 * batch, checkpoint_every=2))
    # pretend the run was stopped after iteration 2: drop what came later
    run_dir = tmp_path / "runs" / "run"
    for p in (run_dir / "checkpoints").glob("*.pt"):
        if p.name != "iter_000002.pt":
            p.unlink()
    ckpt = run_dir / "checkpoints" / "iter_000002.pt"
    resumed = dataclasses.replace(first, total_timesteps=4 * batch, resume=str(ckpt), run_name=None)
    # a resume is a later process; in this one, wait for the next second, or the two event files may
    # be read out of order (tensorboard names them by the second, then a counter: ".10" sorts before ".9")
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.05)
    out = script.train(resumed)
    assert out["global_step"] == 4 * batch and out["run_dir"] == str(run_dir)
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["iteration"] == 4 and state["global_step"] == 4 * batch
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    lr = acc.Scalars("charts/learning_rate")
    assert [e.step for e in lr] == [batch * i for i in (1, 2, 3, 4)]  # one axis, no restart at 0
    uninterrupted = tiny_args(script, tmp_path, iterations=4, run_name="straight")
    script.train(uninterrupted)
    acc2 = EventAccumulator(str(tmp_path / "runs" / "straight"))
    acc2.Reload()
    assert [round(e.value, 10) for e in lr] == [round(e.value, 10) for e in acc2.Scalars("charts/learning_rate")]


def make_checkpoint(script, tmp_path, run_name="src", **overrides):
    args = tiny_args(script, tmp_path, iterations=1, run_name=run_name, **overrides)
    script.train(args)
    return tmp_path / "runs" / run_name / "checkpoints" / "latest.pt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One finished one-iteration run per script, made once for the tests that only read it."""
    made = {}

    def get(script):
        if script.SCRIPT not in made:
            made[script.SCRIPT] = make_checkpoint(script, tmp_path_factory.mktemp(script.SCRIPT))
        return made[script.SCRIPT]

    return get


def corrupt(ckpt, path):
    path.write_bytes(ckpt.read_bytes()[:1000])


def empty(ckpt, path):
    path.write_bytes(b"")


def foreign(ckpt, path):
    torch.save({**torch.load(ckpt, weights_only=True), "script": "some_other_script"}, path)


def not_ours(ckpt, path):
    torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.parametrize(
    "make_bad,message",
    [
        (corrupt, "not a loadable checkpoint"),
        (empty, "not a loadable checkpoint"),
        (foreign, "written by some_other_script.py"),
        (not_ours, "not a checkpoint written by these scripts"),
    ],
)
def test_resume_refuses_a_bad_checkpoint_with_one_sentence(script, tmp_path, checkpoints, make_bad, message):
    bad = tmp_path / "bad.pt"
    make_bad(checkpoints(script), bad)
    proc = run_cli(script.SCRIPT, "--resume", str(bad), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert message in one_sentence_error(proc)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_checkpoint_of_another_game(script, tmp_path, checkpoints):
    ckpt = checkpoints(script)
    before = {p: p.read_bytes() for p in ckpt.parent.iterdir()}
    proc = run_cli(script.SCRIPT, "--resume", str(ckpt), "--env-id", "Pong-v5", cwd=tmp_path)
    assert "is a checkpoint for Breakout-v5, not Pong-v5" in one_sentence_error(proc)
    assert {p: p.read_bytes() for p in ckpt.parent.iterdir()} == before


def test_a_fresh_run_refuses_a_folder_that_holds_checkpoints(script, tmp_path, checkpoints):
    ckpt = checkpoints(script)
    runs_dir, run_name = ckpt.parent.parent.parent, ckpt.parent.parent.name
    before = {p: p.read_bytes() for p in ckpt.parent.iterdir()}
    proc = run_cli(script.SCRIPT, "--run-name", run_name, "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert "already holds checkpoints" in one_sentence_error(proc)
    assert {p: p.read_bytes() for p in ckpt.parent.iterdir()} == before


def test_resume_accepts_a_run_folder(script, tmp_path):
    ckpt = make_checkpoint(script, tmp_path)
    state = script.load_checkpoint(ckpt.parent.parent)
    assert state["path"] == str(ckpt) and state["iteration"] == 1


def test_sigint_saves_a_checkpoint_and_exits_cleanly(script, tmp_path):
    flags = [
        "--num-envs",
        "2",
        "--num-steps",
        "16",
        "--total-timesteps",
        "100000000",
        "--no-cuda",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "sig",
        "--log-interval",
        "0.01",
    ]
    if script.SCRIPT == "ppo_atari":
        flags += ["--num-minibatches", "2", "--update-epochs", "1"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / f"{script.SCRIPT}.py"), *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, progress = [], threading.Event()

    def read():  # every line the child writes, until it closes its output (it exits)
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step "):
                progress.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600  # a guard against a silent hang alone: an exit ends the wait at once
        while not progress.wait(0.1):  # wait for the first progress line
            if proc.poll() is not None or time.monotonic() > deadline:
                reader.join(10)
                pytest.fail(f"no progress line, exit status {proc.poll()}:\n" + "".join(lines)[-3000:])
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert "saving a checkpoint" in out
    state = torch.load(tmp_path / "runs" / "sig" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["iteration"] >= 1
    assert not list((tmp_path / "runs" / "sig" / "checkpoints").glob("*.tmp"))


def test_pickle_that_runs_code_is_refused(script, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"script": script.SCRIPT, "args": {}, "model": Evil(), "iteration": 1}, path)
    with pytest.raises(script.UsageError, match="not a loadable checkpoint"):
        script.load_checkpoint(path)
    assert not marker.exists()
