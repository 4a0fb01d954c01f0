"""Throughput benchmark: agent steps per second and peak memory of each training script.

Each measurement runs in its own fresh process, one after another (never in parallel), so peak
RSS is that process's own and the runs do not compete for cores. Also measured: the env-only
ceiling (random actions, same backend and num_envs) and, optionally, a peer script such as
CleanRL's ppo_atari_envpool.py run with the same settings.

    python benchmarks/throughput.py --steps 8192
    python benchmarks/throughput.py --peer /path/to/ppo_atari_envpool.py   # side-by-side ratio
    python benchmarks/throughput.py --nproc 2   # each script under torchrun, 2 processes
    python benchmarks/throughput.py --variants default no-overlap autocast=bf16   # each script 3 ways
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    scripts: list[str] = field(
        default_factory=lambda: [s for s in ("ppo_atari", "a2c_atari", "a2c_lstm_atari") if (ROOT / f"{s}.py").exists()]
    )
    """training scripts to time, at their default settings except the budget"""
    steps: int = 8192
    """agent steps each script runs (rounded to whole rollouts); start-up is excluded, the first rollout is not"""
    env_id: str = "Breakout-v5"
    """game"""
    env_backend: str = "auto"
    """emulator backend passed to our scripts and used for the env-only ceiling"""
    num_envs: Optional[int] = None
    """override num_envs of every script (default: each script's own default)"""
    cuda: bool = True
    """let the scripts use CUDA where available"""
    peer: Optional[str] = None
    """path of CleanRL's ppo_atari_envpool.py (adapted to envpool>=1.2), timed with the same settings"""
    env_steps: int = 2000
    """steps of the env-only ceiling measurement"""
    repeats: int = 1
    """measure everything this many times, interleaved; the table shows medians"""
    json_out: Optional[str] = None
    """also write the table as JSON here"""
    variants: list[str] = field(default_factory=lambda: ["default"])
    """ways to run each script: default, or flags without dashes (no-overlap; autocast=bf16; both, space-separated)"""
    nproc: int = 1
    """processes per script under torchrun (--standalone; gloo on CPUs, NCCL on GPUs); num_envs is their total"""


DRIVER = r"""
import dataclasses, json, os, sys, time
sys.path.insert(0, {root!r})
import {script} as m
fields = {{f.name for f in dataclasses.fields(m.Args)}}
import tyro
args = tyro.cli(m.Args, args={flags!r})
args = dataclasses.replace(args, **{{k: v for k, v in json.loads({kwargs!r}).items() if k in fields}})
t = time.time()
out = m.train(args)
if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0's SPS counts every process's steps
    print("RESULT " + json.dumps({{"sps": out["sps"], "sps_after_warmup": out.get("sps_after_warmup", float("nan")),
                                  "global_step": out["global_step"], "wall": time.time() - t}}))
"""

ENV_ONLY = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
import ppo_atari as m
envs = m.make_envs(m.Args(env_id={env_id!r}), m.resolve_backend({backend!r}), 1, {num_envs})
envs.reset()
rng = np.random.default_rng(0)
for _ in range(50):
    envs.step(rng.integers(0, envs.num_actions, {num_envs}))
t = time.time()
for _ in range({steps}):
    envs.step(rng.integers(0, envs.num_actions, {num_envs}))
print("RESULT " + json.dumps({{"sps": {steps} * {num_envs} / (time.time() - t)}}))
"""


def run_measured(cmd: list[str], cwd: str) -> tuple[str, float]:
    """Run a command; returns (stdout+stderr, peak RSS in MiB of that process alone)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{out[-3000:]}")
    return out, usage.ru_maxrss / 1024  # Linux reports KiB


def result_of(output: str) -> dict:
    lines = [l for l in output.splitlines() if l.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT ") :])


def measure_once(args: Args, tmp: str) -> list[dict]:
    rows = []
    for script, variant in [(s, v) for s in args.scripts for v in args.variants]:
        flags = [] if variant == "default" else [f"--{f}".replace("=", " ", 1) for f in variant.split()]
        sys.path.insert(0, str(ROOT))
        module = __import__(script)
        script_args = tyro.cli(module.Args, args=" ".join(flags).split())  # the variant's flags count (--num-steps)
        num_envs = args.num_envs or script_args.num_envs
        batch = num_envs * script_args.num_steps
        kwargs = {
            "env_id": args.env_id,
            "env_backend": args.env_backend,
            "num_envs": num_envs,
            "total_timesteps": max(1, args.steps // batch) * batch,
            "eval_every": 0,
            "cuda": args.cuda,
            "runs_dir": tmp,
            "checkpoint_every": 0,
            "log_interval": 1e9,
        }
        code = DRIVER.format(root=str(ROOT), script=script, kwargs=json.dumps(kwargs), flags=" ".join(flags).split())
        cmd = [sys.executable, "-c", code]
        if args.nproc > 1:  # peak RSS is then the largest process's
            driver = Path(tmp) / f"{script}_driver.py"
            driver.write_text(code)
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={args.nproc}",
                str(driver),
            ]
        out, rss = run_measured(cmd, cwd=tmp)
        res = result_of(out)
        what = f"{script}.py" + (f" {' '.join(flags)}" if flags else "")
        what += f" x{args.nproc} processes" if args.nproc > 1 else ""
        rows.append(
            {
                "what": what,
                "num_envs": num_envs,
                "num_steps": script_args.num_steps,
                "steps": res["global_step"],
                "sps": res["sps"],
                "sps_after_warmup": res["sps_after_warmup"],
                "peak_rss_mib": rss,
            }
        )
        print(f"measured {rows[-1]}", flush=True)

    if args.peer:
        num_envs = args.num_envs or 8
        steps = max(1, args.steps // (num_envs * 128)) * num_envs * 128
        cmd = [
            sys.executable,
            args.peer,
            "--env-id",
            args.env_id,
            "--num-envs",
            str(num_envs),
            "--total-timesteps",
            str(steps),
            "--cuda" if args.cuda else "--no-cuda",
        ]
        out, rss = run_measured(cmd, cwd=tmp)
        sps = [int(x) for x in re.findall(r"^SPS: (\d+)", out, flags=re.M)]
        rows.append(
            {
                "what": Path(args.peer).name + " (peer)",
                "num_envs": num_envs,
                "num_steps": 128,
                "steps": steps,
                "sps": float(sps[-1]),
                "peak_rss_mib": rss,
            }
        )
        print(f"measured {rows[-1]}", flush=True)

    for num_envs in sorted({r["num_envs"] for r in rows}):
        code = ENV_ONLY.format(
            root=str(ROOT), env_id=args.env_id, backend=args.env_backend, num_envs=num_envs, steps=args.env_steps
        )
        out, rss = run_measured([sys.executable, "-c", code], cwd=tmp)
        rows.append(
            {
                "what": "env only, random actions",
                "num_envs": num_envs,
                "num_steps": None,
                "steps": args.env_steps * num_envs,
                "sps": result_of(out)["sps"],
                "peak_rss_mib": rss,
            }
        )
        print(f"measured {rows[-1]}", flush=True)
    return rows


def main(args: Args) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="throughput_")
    runs = [measure_once(args, tmp) for _ in range(args.repeats)]
    rows = [
        dict(
            r,
            sps=statistics.median(run[i]["sps"] for run in runs),
            sps_after_warmup=statistics.median(run[i].get("sps_after_warmup", float("nan")) for run in runs),
            peak_rss_mib=statistics.median(run[i]["peak_rss_mib"] for run in runs),
        )
        for i, r in enumerate(runs[0])
    ]

    import torch

    device = (
        torch.cuda.get_device_name(0)
        if args.cuda and torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    )
    print(f"\n{args.env_id}, {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    ceiling = {r["num_envs"]: r["sps"] for r in rows if r["what"].startswith("env only")}
    # SPS counts from the first rollout (like for like with a peer, whose own SPS does); the next column
    # leaves out the first two iterations (CUDA context, cuDNN autotuning, --compile's compilation).
    print("| what | num_envs | steps timed | SPS | SPS after 2 warm-up iterations | of env-only | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        share = "" if r["what"].startswith("env only") else f"{r['sps'] / ceiling[r['num_envs']]:.0%}"
        warm = r.get("sps_after_warmup", float("nan"))
        warm = f"{warm:,.0f}" if warm == warm else ""
        print(
            f"| {r['what']} | {r['num_envs']} | {r['steps']:,} | {r['sps']:,.0f} | {warm} | {share} "
            f"| {r['peak_rss_mib']:,.0f} |"
        )
    peer = [r for r in rows if r["what"].endswith("(peer)")]
    if peer:
        i_peer = rows.index(peer[0])
        for i, r in enumerate(rows):
            if ".py" in r["what"] and "(peer)" not in r["what"] and r["num_envs"] == peer[0]["num_envs"]:
                each = ", ".join(f"{run[i]['sps'] / run[i_peer]['sps']:.2f}" for run in runs)
                print(
                    f"\n{r['what']} / peer: SPS x{r['sps'] / peer[0]['sps']:.2f} (medians; each repeat: {each}), "
                    f"peak RSS x{r['peak_rss_mib'] / peer[0]['peak_rss_mib']:.2f}"
                )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": device, "rows": rows, "repeats": runs}, indent=2))
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
