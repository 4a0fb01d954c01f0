"""One prepared check of the GPU paths, for a session that has a GPU: one command, one table.

    python benchmarks/device_check.py            # on a machine with a CUDA GPU, under 8 minutes
    python benchmarks/device_check.py --cpu-rehearsal   # the same steps, tiny, on the CPU (no GPU columns)

Each row runs in a fresh process: every script for a few iterations at its defaults, then with
--compile, --autocast bf16 and --no-overlap (SPS after 2 warm-up iterations, peak GPU memory, and
the synchronisations per iteration that torch.cuda.set_sync_debug_mode counts); ppo_atari at 8, 32
and 128 envs; one NCCL process under torchrun (init, all-reduce, the scripts' gradient sum); and a
resume that checks the CUDA random state round trip. Uses the ale backend where envpool is not
installed. Without a GPU (and without --cpu-rehearsal) it says so and exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("ppo_atari", "a2c_atari", "a2c_lstm_atari")

TRAIN = r"""
import dataclasses, json, sys, time, warnings
sys.path.insert(0, {root!r})
import torch, tyro
import {script} as m
args = tyro.cli(m.Args, args={flags!r})
cuda = args.cuda and torch.cuda.is_available()
syncs = [0, 0, 0]  # synchronising calls: in all, before the third iteration, before the run's end
if cuda:
    torch.cuda.set_sync_debug_mode("warn")  # each synchronising call warns; counted below
    collect, finish, calls = m.collect_rollout, m.RunLog.finish, [0]
    def counted(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            syncs[1] = syncs[0]
        return collect(*a, **k)
    def finishing(*a, **k):
        syncs[2] = syncs[0]  # the final checkpoint's copies are not the loop's
        return finish(*a, **k)
    m.collect_rollout, m.RunLog.finish = counted, finishing
    show = warnings.showwarning
    def count(message, *a, **k):
        if "synchroniz" in str(message).lower():
            syncs[0] += 1
        else:
            show(message, *a, **k)
    warnings.showwarning = count
    warnings.simplefilter("always")
out = m.train(args)
if cuda:
    torch.cuda.set_sync_debug_mode(0)
iterations = out["iteration"] - 2
print("RESULT " + json.dumps({{"sps": out["sps_after_warmup"], "iterations": out["iteration"],
      "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
      "syncs_per_iteration": (syncs[2] - syncs[1]) / iterations if cuda and iterations > 0 else None,
      "checkpoint": out["checkpoint"]}}))
"""

NCCL = r"""
import datetime, os, sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
import ppo_atari as m
device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
torch.cuda.set_device(device)
dist.init_process_group("nccl", device_id=device, timeout=datetime.timedelta(seconds=120))
agent = m.Agent(4).to(device)
agent(torch.zeros(2, 4, 84, 84, dtype=torch.uint8, device=device))[1].sum().backward()
before = [p.grad.clone() for p in agent.parameters()]
m.sum_gradients(agent)  # one all-reduce over every gradient
total = m.sum_over_processes(torch.ones((), device=device))
ok = all(torch.allclose(b * dist.get_world_size(), p.grad) for b, p in zip(before, agent.parameters()))
print("RESULT " + ("ok" if ok and int(total.item()) == dist.get_world_size() else "MISMATCH"), flush=True)
dist.destroy_process_group()
"""

RNG = r"""
import sys
sys.path.insert(0, {root!r})
import torch
import ppo_atari as m
state = m.load_checkpoint({checkpoint!r})
device = torch.device("cuda")
torch.cuda.manual_seed(12345)  # something else first, so the restore has to change it
m.set_rng_state(state["rng"], device)
saved = state["rng"].get("cuda")
ok = torch.is_tensor(saved) and torch.equal(torch.cuda.get_rng_state(device), saved)
print("RESULT " + ("ok" if ok else "MISMATCH"), flush=True)
"""


@dataclass
class Args:
    iterations: int = 6
    """iterations per training row (the first two are warm-up and not timed)"""
    cpu_rehearsal: bool = False
    """run every step on the CPU with tiny sizes, to check this script itself (no GPU columns)"""
    json_out: str = ""
    """also write the rows as JSON here"""


def run(code: str, cwd: str, torchrun: int = 0, timeout: float = 300) -> tuple[dict | str | None, str, float]:
    """Run `code` in a fresh process (under torchrun with that many processes); its RESULT line, output, seconds."""
    path = Path(cwd) / f"check_{time.time_ns()}.py"
    path.write_text(code)
    cmd = [sys.executable, str(path)]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}", str(path)]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        output = f"timed out after {timeout:.0f}s\n{e.stdout or ''}{e.stderr or ''}"
    lines = [line[len("RESULT ") :] for line in output.splitlines() if line.startswith("RESULT ")]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = lines[-1]
    return result, output, time.time() - started


def main(args: Args) -> list[dict]:
    if not torch.cuda.is_available() and not args.cpu_rehearsal:
        print(
            "device_check.py needs a CUDA GPU (none is visible here); nothing was run. "
            "--cpu-rehearsal runs the same steps on the CPU."
        )
        return []
    tmp = tempfile.mkdtemp(prefix="device_check_")
    common = ["--runs-dir", tmp, "--eval-every", "0", "--log-interval", "1000000", "--checkpoint-every", "0"]
    if args.cpu_rehearsal:
        common += ["--no-cuda"]
    sizes = {"ppo_atari": (8, 128), "a2c_atari": (16, 5), "a2c_lstm_atari": (16, 20)}  # the defaults
    if args.cpu_rehearsal:
        sizes = {"ppo_atari": (4, 16), "a2c_atari": (4, 5), "a2c_lstm_atari": (4, 8)}
    rows = []

    def train_row(script: str, what: str, flags: list[str], num_envs: int, num_steps: int) -> dict:
        steps = num_envs * num_steps * args.iterations
        flags = [*common, *flags, "--total-timesteps", str(steps), "--run-name", f"{script}_{len(rows)}"]
        result, output, seconds = run(TRAIN.format(root=str(ROOT), script=script, flags=flags), tmp)
        row = {"what": f"{script} {what}", "seconds": round(seconds, 1)}
        if isinstance(result, dict):
            row.update(result)
        else:
            row["error"] = (output.strip().splitlines() or ["no output"])[-1][:200]
        rows.append(row)
        print(f"measured {row}", flush=True)
        return row

    for script in SCRIPTS:
        num_envs, num_steps = sizes[script]
        size = ["--num-envs", str(num_envs), "--num-steps", str(num_steps)]
        for what, flags in [
            ("defaults", []),
            ("--compile", ["--compile"]),
            ("--autocast bf16", ["--autocast", "bf16"]),
            ("--no-overlap", ["--no-overlap"]),
        ]:
            train_row(script, what, size + flags, num_envs, num_steps)
    num_steps = sizes["ppo_atari"][1]
    for num_envs in (8, 32, 128) if not args.cpu_rehearsal else (2, 8):
        train_row(
            "ppo_atari",
            f"{num_envs} envs",
            ["--num-envs", str(num_envs), "--num-steps", str(num_steps)],
            num_envs,
            num_steps,
        )

    if not args.cpu_rehearsal:
        result, output, seconds = run(NCCL.format(root=str(ROOT)), tmp, torchrun=1, timeout=180)
        last_line = (output.strip().splitlines() or ["?"])[-1][:200]
        rows.append(
            {
                "what": "NCCL under torchrun, 1 process: init with device_id, gradient all-reduce",
                "seconds": round(seconds, 1),
                "result": result or last_line,
            }
        )
        checkpoint = next((r["checkpoint"] for r in rows if r.get("checkpoint") and "defaults" in r["what"]), None)
        if checkpoint:
            result, output, seconds = run(RNG.format(root=str(ROOT), checkpoint=checkpoint), tmp, timeout=120)
            rows.append(
                {
                    "what": "resume: the CUDA random state restored from the checkpoint",
                    "seconds": round(seconds, 1),
                    "result": result or (output.strip().splitlines() or ["?"])[-1],
                }
            )

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu_rehearsal else "CPU rehearsal"
    backend = "envpool" if __import__("importlib").util.find_spec("envpool") else "ale"
    print(
        f"\n{device}, torch {torch.__version__}, {backend} backend, {time.strftime('%Y-%m-%d')}, "
        f"{args.iterations} iterations per row (SPS after the first 2)\n"
    )
    print("| what | SPS | peak GPU GiB | syncs / iteration | result | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sps = f"{r['sps']:,.0f}" if isinstance(r.get("sps"), (int, float)) and r["sps"] == r["sps"] else ""
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else ""
        syncs = f"{r['syncs_per_iteration']:.1f}" if r.get("syncs_per_iteration") is not None else ""
        print(f"| {r['what']} | {sps} | {peak} | {syncs} | {r.get('result', r.get('error', 'ran'))} | {r['seconds']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    main(tyro.cli(Args))
