"""What drives a2c_lstm_atari's update: its logged pre-clip gradient norms, summarised by phase of the run.

    python benchmarks/grad_norms.py runs/<run> [runs/<other run> ...] --phases 0 300000 1000000 3000000

For each run and phase (agent steps): the median norm of each part's gradient (convolutions, LSTM,
policy head, value head), the median of the whole (what --max-grad-norm compares), the share of
updates the clip scaled down, the policy head's norm over the value head's, and the mean entropy.
Reads TensorBoard's losses/grad_norm_* and losses/entropy, which the script logs every update.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

PARTS = ("conv", "lstm", "actor", "critic")


@dataclass
class Args:
    runs: tyro.conf.Positional[list[str]]
    """run folders of a2c_lstm_atari.py"""
    phases: list[int] = field(default_factory=lambda: [0, 300_000, 1_000_000, 2_000_000, 3_000_000])
    """edges of the phases, in agent steps"""
    max_grad_norm: float = 0.5
    """the clip to compare the whole gradient's norm with"""
    json_out: str = ""
    """also write the table as JSON here"""


def summarise(run_dir: str, phases: list[int], max_grad_norm: float) -> list[dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    if "losses/grad_norm_conv" not in acc.Tags()["scalars"]:
        raise SystemExit(f"error: {run_dir!r} logged no losses/grad_norm_* (a2c_lstm_atari.py runs log them).")
    series = {part: acc.Scalars(f"losses/grad_norm_{part}") for part in PARTS}
    steps = np.array([e.step for e in series["conv"]])
    norms = {part: np.array([e.value for e in events]) for part, events in series.items()}
    entropy = {e.step: e.value for e in acc.Scalars("losses/entropy")}
    whole = np.sqrt(sum(v**2 for v in norms.values()))
    rows = []
    for low, high in zip(phases, phases[1:]):
        inside = (steps >= low) & (steps < high)
        if not inside.any():
            continue
        rows.append(
            {
                "run": "/".join(Path(run_dir).resolve().parts[-2:]),
                "from": low,
                "to": high,
                "updates": int(inside.sum()),
                **{part: float(np.median(norms[part][inside])) for part in PARTS},
                "whole": float(np.median(whole[inside])),
                "clipped": float((whole[inside] > max_grad_norm).mean()),
                "actor_over_critic": float(np.median(norms["actor"][inside] / norms["critic"][inside])),
                "entropy": float(np.mean([entropy[s] for s in steps[inside] if s in entropy])),
            }
        )
    return rows


def main(args: Args) -> list[dict]:
    rows = [row for run in args.runs for row in summarise(run, args.phases, args.max_grad_norm)]
    print(
        "| run | steps | updates | conv | LSTM | policy head | value head | whole | clipped | policy/value head "
        "| entropy |"
    )
    print("|---" * 11 + "|")
    for r in rows:
        print(
            f"| {r['run']} | {r['from'] / 1e6:g}-{r['to'] / 1e6:g}M | {r['updates']:,} | {r['conv']:.4f} | "
            f"{r['lstm']:.4f} | {r['actor']:.4f} | {r['critic']:.4f} | {r['whole']:.3f} | {r['clipped']:.1%} | "
            f"{r['actor_over_critic']:.2f} | {r['entropy']:.3f} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
