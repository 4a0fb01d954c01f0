"""A published learning curve read from Stable-Baselines3 training logs (its `N.monitor.csv` files).

    python benchmarks/monitor_curve.py path/to/a2c/BreakoutNoFrameskip-v4_1 --at-steps 5000000 10000000

SB3 zoo publishes its trained agents with the Monitor logs of their training envs
(DLR-RM/rl-trained-agents). Each row is one whole game: its score `r`, its length `l` in emulator
frames (Monitor sits below the frame skip) and its end `t` in seconds from the start. Here every
env's games are put in the order they ended (`t`), the agent steps so far are the frames of the
games ended so far over the frame skip, and the curve at N agent steps is the mean score of the
last 100 games ended by then: how SB3 zoo's A2C curve at 0.5-5M in published_scores.json was read
(this reproduces each of those points to the decimal).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    folder: tyro.conf.Positional[str]
    """the folder that holds the run's N.monitor.csv files"""
    at_steps: list[int] = field(default_factory=lambda: [1_000_000, 5_000_000, 10_000_000])
    """agent steps at which to read the curve"""
    frame_skip: int = 4
    """emulator frames per agent step"""
    last_games: int = 100
    """the curve is the mean score of this many games ended last"""


def read_games(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """The score and the length in frames of every game of every env, in the order they ended."""
    games = []
    for path in sorted(Path(folder).glob("*.monitor.csv")):
        lines = path.read_text().splitlines()[1:]  # the first line is Monitor's JSON header
        games += [(float(r["t"]), float(r["r"]), int(r["l"])) for r in csv.DictReader(lines)]
    if not games:
        raise SystemExit(f"no *.monitor.csv files in {folder!r}.")
    games.sort()
    return np.array([g[1] for g in games]), np.array([g[2] for g in games])


def curve(folder: str, at_steps: list[int], frame_skip: int = 4, last_games: int = 100) -> dict:
    scores, frames = read_games(folder)
    steps = np.cumsum(frames) / frame_skip
    out = {}
    for n in at_steps:
        ended = scores[steps <= n]
        out[n] = round(float(ended[-last_games:].mean()), 1) if len(ended) else None
    return {"steps": list(out), "returns": list(out.values()), "games": len(scores)}


if __name__ == "__main__":
    args = tyro.cli(Args)
    print(json.dumps(curve(args.folder, args.at_steps, args.frame_skip, args.last_games)))
