"""Data-parallel training under torchrun, on CPU processes (gloo) over 127.0.0.1 only: one update on
N processes equals one process's update on the whole batch; real runs keep the processes' weights
identical, seed their envs apart, log every process's games from rank 0; bad flags, signals, a
killed worker and two "machines" on one box."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, SCRIPTS, TINY

TESTS = ROOT / "tests"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2, nnodes=1, node_rank=0, port=None, max_restarts=0, rdzv_id="test"):
    """The torchrun command line, rendezvous and gloo on 127.0.0.1 only."""
    port = port or free_port()
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--node-rank={node_rank}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id={rdzv_id}",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.5",
        *map(str, args),
    ]


ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def flags(script, tmp_path, iterations, num_envs=4, **extra):
    settings = {
        **TINY[script],
        "num_envs": num_envs,
        "runs_dir": tmp_path / "runs",
        "log_interval": 1e9,
        "eval_every": 0,
        "max_episode_frames": 120,
        **extra,
    }
    flags = ["--no-cuda", "--total-timesteps", str(iterations * num_envs * settings["num_steps"])]
    for name, value in settings.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


LIMIT = 900  # seconds: a guard against a hung run alone; every wait below ends as soon as what it waits for exits


def stop(proc):
    """Kill the process group (torchrun and its workers) of a process that is still running. A process already
    reaped is left alone: its group id may have gone to another process since."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_group(cmd, timeout=LIMIT):
    """Run torchrun in a process group of its own and kill the whole group on the way out, so a
    timeout or a failed assertion leaves no worker behind."""
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        stop(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def start(cmd, logs, **env):
    """Start torchrun in a process group of its own, its stdout and stderr in files under `logs` (read
    while it runs, and never a full pipe that blocks it)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        return subprocess.Popen(cmd, env={**ENV, **env}, stdout=stdout, stderr=stderr, start_new_session=True)


def output(logs):
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


def wait_for(predicate, proc, logs, timeout=LIMIT):
    """Wait until predicate() holds; fail with the output at once if `proc` exits first, or at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None and not predicate():
            pytest.fail(f"exited with status {proc.returncode} first:\n{output(logs)[1][-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout} s:\n{output(logs)[1][-3000:]}")
        time.sleep(0.1)


def wait_all(procs, timeout=LIMIT):
    """Wait until every process exits, or one fails (the others would wait for it), or the deadline."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.returncode not in (None, 0) for p in procs):
            break
        time.sleep(0.2)


def drive(script, out, *script_flags, **torchrun_args):
    return torchrun(TESTS / "torchrun_driver.py", script, out, "--", *script_flags, **torchrun_args)


def load_records(out, restart=0):
    return [json.loads((out / f"rank_{r}_{restart}.json").read_text()) for r in (0, 1)]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# --- one update ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_step")
    subprocess.run([sys.executable, TESTS / "one_step_driver.py", out], check=True, env=ENV, timeout=LIMIT)
    assert run_group(torchrun(TESTS / "one_step_driver.py", out)).returncode == 0
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_one_update_on_two_processes_equals_one_process_on_the_whole_batch(one_step, name):
    alone = torch.load(one_step / f"{name}_1_0.pt", weights_only=True)
    halves = [torch.load(one_step / f"{name}_2_{r}.pt", weights_only=True) for r in (0, 1)]
    assert same_weights(halves[0]["params"], halves[1]["params"])  # every process steps alike
    for k, v in alone["grads"].items():  # the whole batch's gradient, not a multiple of it
        assert torch.allclose(halves[0]["grads"][k], v, atol=1e-5, rtol=1e-4), k
    for k, v in alone["params"].items():
        assert torch.allclose(halves[0]["params"][k], v, atol=1e-5, rtol=1e-5), k
    assert halves[0]["figures"] == pytest.approx(alone["figures"], rel=1e-4, abs=1e-6)


def test_the_target_kl_stop_is_agreed_by_every_process(one_step):
    halves = [torch.load(one_step / f"target_kl_2_{r}.pt", weights_only=True) for r in (0, 1)]
    assert 1 < halves[0]["steps"] < 16  # it did stop early, after some minibatches
    assert halves[0]["steps"] == halves[1]["steps"] and same_weights(halves[0]["params"], halves[1]["params"])


# --- real runs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """One 2-process run of each script (4 envs in all, checkpoints every 2 iterations), made once."""
    made = {}

    def get(script):
        if script not in made:
            tmp = tmp_path_factory.mktemp(script)
            proc = run_group(drive(script, tmp / "out", *flags(script, tmp, 6, run_name="d", checkpoint_every=2)))
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[script] = (tmp, proc)
        return made[script]

    return get


@pytest.mark.parametrize("name", SCRIPTS)
def test_two_processes_train_one_model_on_envs_seeded_apart(two_process_runs, name):
    tmp, _ = two_process_runs(name)
    records = load_records(tmp / "out")
    models = [torch.load(tmp / "out" / f"model_{r}_0.pt", weights_only=True) for r in (0, 1)]
    assert same_weights(*models)  # after 6 updates
    seeds = [set().union(*(range(s, s + n) for s, n, full in r["seeds"] if not full)) for r in records]
    assert len(seeds) == 2 and not seeds[0] & seeds[1] and len(seeds[0]) == len(seeds[1]) == 2  # 2 envs each
    assert [r["iteration"] for r in records] == [6, 6]
    state = torch.load(tmp / "runs" / "d" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["global_step"] == 6 * 4 * TINY[name]["num_steps"]  # every process's steps count
    assert len(state["rng_by_rank"]) == 2 and not torch.equal(
        state["rng_by_rank"][0]["torch"], state["rng_by_rank"][1]["torch"]
    )
    assert same_weights(state["model"], models[0])


@pytest.mark.parametrize("name", SCRIPTS)
def test_rank_0_alone_writes_and_logs_every_processs_games(two_process_runs, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, proc = two_process_runs(name)
    records = load_records(tmp / "out")
    assert all(r["games"] for r in records)  # both processes finished games
    run_dir = tmp / "runs" / "d"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1 and (run_dir / "args.json").exists()
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    logged = sorted(e.value for e in acc.Scalars("charts/episodic_return"))
    assert logged == sorted(score for r in records for score, _ in r["games"])
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("step ") for line in lines) == 1  # one progress line, rank 0's, at the end
    assert sum(line.startswith("finished at step ") for line in lines) == 1  # and one closing line, rank 0's


def test_sample_plays_a_distributed_runs_checkpoint(two_process_runs, tmp_path):
    import sample

    run_tmp, _ = two_process_runs("ppo_atari")
    summary = sample.play(
        sample.Args(checkpoint=str(run_tmp / "runs" / "d"), episodes=1, max_episode_frames=120, cuda=False)
    )
    assert summary["trained_steps"] == 6 * 4 * TINY["ppo_atari"]["num_steps"] and len(summary["episodes"]) == 1


def test_resuming_on_another_number_of_processes_continues_and_says_the_rng_was_reseeded(
    two_process_runs, tmp_path, capsys
):
    import a2c_atari

    run_tmp, _ = two_process_runs("a2c_atari")
    ckpt = run_tmp / "runs" / "d" / "checkpoints" / "iter_000004.pt"
    batch = 4 * TINY["a2c_atari"]["num_steps"]
    out = a2c_atari.train(
        a2c_atari.Args(
            **{**TINY["a2c_atari"], "num_envs": 4},
            resume=str(ckpt),
            cuda=False,
            total_timesteps=8 * batch,
            eval_every=0,
            log_interval=1e9,
            max_episode_frames=120,
        )
    )
    assert out["global_step"] == 8 * batch and out["iteration"] == 8
    assert "resuming on 1 process(es) a run checkpointed on 2" in capsys.readouterr().out


def test_a_num_envs_that_the_processes_do_not_divide_is_one_sentence_from_each(tmp_path):
    proc = run_group(drive("ppo_atari", tmp_path / "out", *flags("ppo_atari", tmp_path, 2, num_envs=3)))
    sentence = "error: --num-envs (3) is the total over all processes, so it must be divisible by their number (2)."
    assert proc.returncode != 0 and proc.stderr.count(sentence) == 2
    assert not (tmp_path / "runs").exists()


def test_sigint_to_torchrun_stops_every_process_at_one_iteration_with_one_checkpoint(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = start(
        drive("ppo_atari", out, *flags("ppo_atari", tmp_path, 100_000, run_name="sig", checkpoint_every=0)), logs
    )
    try:
        # both processes are training (a fixed sleep after start-up raced a loaded machine)
        wait_for(lambda: len(list(out.glob("rolled_out_*"))) == 2, proc, logs)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=LIMIT)
    finally:
        stop(proc)
    stdout, stderr = output(logs)
    records = load_records(out)
    assert [r["exit_code"] for r in records] == [0, 0], stderr[-3000:]  # main() ended each process with status 0
    assert records[0]["iteration"] == records[1]["iteration"] >= 1
    folder = tmp_path / "runs" / "sig" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [f"iter_{records[0]['iteration']:06d}.pt", "latest.pt"]
    assert stdout.count("saving a checkpoint and stopping") == 1
    pids = [int(p.read_text()) for p in out.glob("pid_*")]
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):  # no orphan
        assert time.monotonic() < deadline, [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        time.sleep(0.1)


def test_a_killed_worker_is_restarted_from_the_latest_checkpoint_on_the_same_step_axis(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs, iterations = tmp_path / "out", tmp_path / "logs", 20
    cmd = drive("ppo_atari", out, *flags("ppo_atari", tmp_path, iterations, checkpoint_every=5), max_restarts=1)
    # rank 1 stops before its 13th rollout and waits there to be killed: it is alive when the kill comes (a
    # worker that had finished could not be), and rank 0, which cannot pass update 13 without it, has saved
    # iteration 10 and not 15
    proc = start(cmd, logs, TORCHRUN_DRIVER_PAUSE="1:13")
    try:
        paused = out / "paused_1_0"
        wait_for(paused.exists, proc, logs)
        os.kill(int(paused.read_text()), signal.SIGKILL)
        proc.wait(timeout=LIMIT)
    finally:
        stop(proc)
    stdout, stderr = output(logs)
    assert proc.returncode == 0, stderr[-3000:]
    runs = tmp_path / "runs"
    (run_dir,) = runs.iterdir()  # the restart found the same run folder by its default name
    records = load_records(out, restart=1)
    assert [r["iteration"] for r in records] == [iterations, iterations]
    resumed_from = int(stdout.split("restarted by torchrun: resuming from ")[1].split("(iteration ")[1].split(")")[0])
    assert resumed_from == 10
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    batch = 4 * TINY["ppo_atari"]["num_steps"]
    assert steps == [batch * i for i in range(1, iterations + 1)]  # one axis: what came after the checkpoint was purged
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["iteration"] == iterations and state["global_step"] == iterations * batch


def test_two_machines_on_one_box_train_together(tmp_path):
    out, port = tmp_path / "out", free_port()
    cmds = [
        drive(
            "a2c_atari",
            out,
            *flags("a2c_atari", tmp_path, 4, run_name="m"),
            nproc=1,
            nnodes=2,
            node_rank=node,
            port=port,
        )
        for node in (0, 1)
    ]
    procs = [start(c, tmp_path / f"node_{node}") for node, c in enumerate(cmds)]
    try:
        wait_all(procs)
    finally:
        for p in procs:
            stop(p)
    errors = [output(tmp_path / f"node_{node}")[1][-2000:] for node in (0, 1)]
    assert [p.returncode for p in procs] == [0, 0], errors
    models = [torch.load(out / f"model_{r}_0.pt", weights_only=True) for r in (0, 1)]
    assert same_weights(*models)
    records = load_records(out)
    assert records[0]["seeds"][0][0] != records[1]["seeds"][0][0]
    state = torch.load(tmp_path / "runs" / "m" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["global_step"] == 4 * 4 * TINY["a2c_atari"]["num_steps"] and same_weights(state["model"], models[0])


def test_each_process_gets_back_its_own_rng_stream_on_the_same_number_of_processes(script, capsys):
    streams = [torch.Generator().manual_seed(s).get_state() for s in (11, 22)]
    saved = {"rng": {"torch": streams[0]}, "rng_by_rank": [{"torch": s} for s in streams], "iteration": 7}
    before = torch.get_rng_state()
    try:
        script.restore_rng(saved, script.Args(), script.Processes(rank=1, world_size=2))
        assert torch.equal(torch.get_rng_state(), streams[1])
        script.restore_rng(saved, script.Args(), script.Processes(rank=0, world_size=3))  # another number
        assert not any(torch.equal(torch.get_rng_state(), s) for s in streams)
        assert "the RNG streams were reseeded" in capsys.readouterr().out
    finally:
        torch.set_rng_state(before)


def test_cpu_processes_share_the_machines_cores(script, monkeypatch):
    calls = []
    monkeypatch.setattr(script.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(script.os, "cpu_count", lambda: 16)
    script.set_threads(script.Args(), script.Processes(world_size=8, local_world_size=4), torch.device("cpu"))
    script.set_threads(script.Args(), script.Processes(), torch.device("cpu"))  # one process: torch's default
    script.set_threads(script.Args(threads=3), script.Processes(world_size=2, local_world_size=2), torch.device("cpu"))
    assert calls == [4, 3]
