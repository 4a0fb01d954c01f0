"""Benchmark runner: a matrix of scripts x games x seeds, each run in its own runs/ folder.

    python benchmarks/run.py --scripts ppo_atari a2c_atari --env-ids Breakout-v5 Pong-v5 \
        --seeds 1 2 3 --total-timesteps 10000000 --parallel 2 --script-args="--env-backend ale"

Runs are named <env>__<script>__<seed> so the matrix can be run again: a complete run is
skipped, an interrupted one (it has a checkpoint but fewer steps than asked) is resumed from its
latest checkpoint, anything else starts fresh. Each run's console output goes to
runs/<...>/stdout.log; benchmark.json beside it records what the report needs.
Then: python benchmarks/report.py --runs-dir <same folder>.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    scripts: list[str] = field(default_factory=lambda: ["ppo_atari"])
    """training scripts (file names without .py)"""
    env_ids: list[str] = field(default_factory=lambda: ["Breakout-v5"])
    """games"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds"""
    total_timesteps: int = 10_000_000
    """agent steps per run"""
    runs_dir: str = "runs/benchmark"
    """folder holding one sub-folder per run"""
    parallel: int = 1
    """runs at once (each uses its own envs and threads: on a small machine keep 1)"""
    nproc_per_node: int = 1
    """processes per run under torchrun --standalone (one per GPU, or CPU processes); --num-envs is their total"""
    script_args: str = ""
    """extra flags for every run, as one string given with '=': --script-args="--num-envs 16 --no-cuda" """
    progress_interval: float = 60.0
    """seconds between progress lines (each running run's latest console line)"""
    dry_run: bool = False
    """print what would run, run nothing"""


def hardware(script_args: str) -> str:
    """What the runs execute on, as the report states it: the GPU, or the CPU and its core count."""
    if torch.cuda.is_available() and "--no-cuda" not in shlex.split(script_args):
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def set_aside_stale_logs(run_dir: Path) -> None:
    """A run that restarts from scratch moves the logs of its failed start into stale_<time>/, so the
    report reads one attempt only and nothing is deleted."""
    stale = (
        [
            p
            for p in run_dir.iterdir()
            if p.name.startswith("events.out.tfevents") or p.name in ("args.json", "provenance.json")
        ]
        if run_dir.is_dir()
        else []
    )
    if stale:
        dest = run_dir / f"stale_{int(time.time())}"
        dest.mkdir()
        for p in stale:
            p.rename(dest / p.name)


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return lines[-1] if lines else "(no output yet)"


def run_name(script: str, env_id: str, seed: int) -> str:
    return f"{env_id.replace('/', '-')}__{script}__{seed}"


def status(run_dir: Path, total_timesteps: int) -> str:
    """'complete', 'interrupted' (a checkpoint short of the budget) or 'new'."""
    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return "new"
    try:
        state = torch.load(latest, map_location="cpu", weights_only=True)
    except Exception:
        return "new"
    saved = state["args"]
    batch = saved["num_envs"] * saved["num_steps"]
    return "complete" if state["global_step"] >= (total_timesteps // batch) * batch else "interrupted"


def command(args: Args, script: str, env_id: str, seed: int, state: str) -> list[str]:
    name = run_name(script, env_id, seed)
    launcher = [sys.executable]
    if args.nproc_per_node > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}"]
    cmd = [
        *launcher,
        str(ROOT / f"{script}.py"),
        "--env-id",
        env_id,
        "--seed",
        str(seed),
        "--total-timesteps",
        str(args.total_timesteps),
        "--runs-dir",
        args.runs_dir,
        "--run-name",
        name,
        *shlex.split(args.script_args),
    ]
    if state == "interrupted":
        cmd += ["--resume", str(Path(args.runs_dir) / name)]
    return cmd


def main(args: Args) -> dict:
    if args.parallel < 1:
        sys.exit("error: --parallel must be at least 1.")
    missing = [s for s in args.scripts if not (ROOT / f"{s}.py").is_file()]
    if missing:
        sys.exit(f"error: no such script in {ROOT}: {', '.join(missing)}.")
    sys.path.insert(0, str(ROOT))
    from ppo_atari import UsageError, atari_game

    for env_id in args.env_ids:
        try:
            atari_game(env_id)
        except UsageError as e:
            sys.exit(f"error: {e}")
    if not (args.scripts and args.env_ids and args.seeds):
        sys.exit("error: --scripts, --env-ids and --seeds each need at least one value.")
    matrix = [(s, e, seed) for e in args.env_ids for s in args.scripts for seed in args.seeds]
    todo, skipped = [], []
    for script, env_id, seed in matrix:
        run_dir = Path(args.runs_dir) / run_name(script, env_id, seed)
        state = status(run_dir, args.total_timesteps)
        if state == "complete":
            skipped.append(run_dir.name)
            print(f"skip {run_dir.name}: complete", flush=True)
        else:
            todo.append((script, env_id, seed, state))
    if args.dry_run:
        for script, env_id, seed, state in todo:
            verb = "resume " if state == "interrupted" else "run "
            print(verb + shlex.join(command(args, script, env_id, seed, state)))
        return {"skipped": skipped, "ran": [], "stopped": [], "failed": []}

    running: list[tuple[subprocess.Popen, str, float]] = []
    ran, stopped, failed = [], [], []
    start = last_progress = time.time()
    queue = list(todo)
    while queue or running:
        while queue and len(running) < args.parallel:
            script, env_id, seed, state = queue.pop(0)
            name = run_name(script, env_id, seed)
            run_dir = Path(args.runs_dir) / name
            if state == "new":
                set_aside_stale_logs(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "benchmark.json").write_text(
                json.dumps(
                    {
                        "script": script,
                        "env_id": env_id,
                        "seed": seed,
                        "total_timesteps": args.total_timesteps,
                        "script_args": args.script_args,
                        "hardware": hardware(args.script_args),
                        "torch": torch.__version__,
                    }
                )
            )
            log = open(run_dir / "stdout.log", "a")
            proc = subprocess.Popen(command(args, script, env_id, seed, state), stdout=log, stderr=subprocess.STDOUT)
            running.append((proc, name, time.time()))
            print(f"{'resume' if state == 'interrupted' else 'start'} {name}", flush=True)
        time.sleep(0.5)
        if time.time() - last_progress >= args.progress_interval:
            last_progress = time.time()
            for _, name, _ in running:
                print(
                    f"[{len(ran) + len(stopped) + len(failed)}/{len(todo)} done, {time.time() - start:.0f}s] {name}: "
                    f"{last_line(Path(args.runs_dir) / name / 'stdout.log')}",
                    flush=True,
                )
        for proc, name, began in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, name, began))
            complete = status(Path(args.runs_dir) / name, args.total_timesteps) == "complete"
            if proc.returncode == 0:  # a run stopped by a signal exits 0 with its checkpoint short of the budget
                (ran if complete else stopped).append(name)
                outcome = "complete" if complete else "stopped short of its budget (the same command resumes it)"
            else:
                failed.append(name)
                outcome = f"FAILED (exit {proc.returncode}, see stdout.log)"
            done = len(ran) + len(stopped) + len(failed)
            print(
                f"[{done}/{len(todo)} done, {len(running)} running, {time.time() - start:.0f}s] {name}: {outcome}",
                flush=True,
            )
    return {"skipped": skipped, "ran": ran, "stopped": stopped, "failed": failed}


if __name__ == "__main__":
    result = main(tyro.cli(Args))
    sys.exit(1 if result["failed"] or result["stopped"] else 0)
