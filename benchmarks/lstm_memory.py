"""Does the recurrent agent use its memory? One checkpoint of a2c_lstm_atari.py, played three ways.

    python benchmarks/lstm_memory.py runs/<run>/checkpoints/latest.pt --episodes 30

Each way plays the same whole games (same evaluation seed, the checkpoint's evaluation protocol)
through a2c_lstm_atari.evaluate(); only the LSTM state handed to the network at each step differs:
- as-trained: the env's own state, zeroed where a game starts (as in training);
- zeroed:     zeros before every step, so the agent sees the current observation alone;
- shuffled:   every step, env i gets env i-1's state (realistic statistics, the wrong history).
The memory is shown when zeroed and shuffled score clearly below as-trained. Nothing in the
training script changes: the agent is wrapped, and its own evaluate() plays it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parent.parent
MODES = ("as-trained", "zeroed", "shuffled")


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """checkpoint file of a2c_lstm_atari.py (or its run folder: the latest checkpoint)"""
    episodes: int = 30
    """whole games per way of playing"""
    modes: list[Literal["as-trained", "zeroed", "shuffled"]] = field(default_factory=lambda: list(MODES))
    """ways of handing the LSTM its state"""
    seed: int = 12_345
    """evaluation seed, the same for every way"""
    env_backend: Literal["auto", "envpool", "ale"] = "auto"
    """emulator backend"""
    out: Optional[str] = None
    """write the figures to this JSON file too"""


class HandledState(torch.nn.Module):
    """The trained agent, with the state handed to each step replaced as `mode` says."""

    def __init__(self, agent: torch.nn.Module, mode: str):
        super().__init__()
        self.agent, self.mode = agent, mode

    def initial_state(self, num_envs: int, device: torch.device) -> tuple:
        return self.agent.initial_state(num_envs, device)

    def step(self, obs: torch.Tensor, state: tuple, starts: torch.Tensor):
        if self.mode == "zeroed":
            state = tuple(torch.zeros_like(s) for s in state)
        elif self.mode == "shuffled":  # env i takes env i-1's state: never its own (with 2+ envs)
            state = tuple(torch.roll(s, shifts=1, dims=1) for s in state)
        return self.agent.step(obs, state, starts)


def known_args(module, saved: dict) -> dict:
    """A checkpoint's args that the script still has (a flag removed since, as --lstm-layer-norm, is left out)."""
    return {k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(module.Args)}}


def play(module, state: dict, mode: str, episodes: int, seed: int, backend: str) -> np.ndarray:
    before = {k: v for k, v in module.NETWORK_ARGS.items() if v is not None}  # a checkpoint older than a flag
    args = dataclasses.replace(
        module.Args(**known_args(module, before | state["args"])), eval_episodes=episodes, cuda=False
    )
    agent = module.Agent(state["num_actions"], args.frame_stack, args.lstm_hidden_size, args.lstm_skip)
    module.load_weights(agent, state)
    agent.eval()
    return module.evaluate(HandledState(agent, mode), args, module.resolve_backend(backend), torch.device("cpu"), seed)


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT))
    import a2c_lstm_atari as module

    try:
        state = module.load_checkpoint(args.checkpoint)
    except module.UsageError as e:
        sys.exit(f"error: {e}")
    if state["script"] != module.SCRIPT:
        sys.exit(f"error: {state['path']!r} was written by {state['script']}.py, not a2c_lstm_atari.py.")
    if args.episodes < 2:
        sys.exit("error: --episodes must be at least 2.")
    results = {
        "checkpoint": state["path"],
        "global_step": state["global_step"],
        "episodes": args.episodes,
        "seed": args.seed,
        "greedy": state["args"].get("eval_greedy", False),
        "modes": {},
    }
    for mode in args.modes:
        try:
            scores = play(module, state, mode, args.episodes, args.seed, args.env_backend)
        except module.UsageError as e:  # weights that do not fit the network, an unknown backend: before any game
            sys.exit(f"error: {e}")
        results["modes"][mode] = {"mean": float(scores.mean()), "std": float(scores.std()), "scores": scores.tolist()}
        print(f"{mode:>10}: {scores.mean():6.1f} +- {scores.std():5.1f} over {len(scores)} games", flush=True)
    if "as-trained" in results["modes"]:
        base = results["modes"]["as-trained"]["mean"]
        for r in results["modes"].values():
            r["fraction_of_as_trained"] = r["mean"] / base if base else float("nan")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
