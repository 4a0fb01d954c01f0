"""How large is the input the actor and critic heads read, and how much gradient reaches each part?

    python benchmarks/head_inputs.py --script a2c_lstm_atari
    python benchmarks/head_inputs.py --script a2c_atari --checkpoint runs/<run>/checkpoints/iter_005000.pt

Plays --steps steps of random actions in --num-envs envs through the script's own envs, episode
statistics and frame stack, then feeds those observations to the agent. The feed-forward agent's heads
read the trunk's 512 ReLU features; the LSTM agent's read the LSTM output, unrolled from a zero state
over the same steps (state zeroed where a game starts), beside the trunk's features with --lstm-skip.
Prints, as JSON, the mean |x| per unit and the L1 norm per observation of that input (and of the LSTM
agent's trunk), and the gradient norm of each part (trunk = the convolutions and their 512-unit layer,
then the LSTM, the actor, the critic) for one fixed unit-normal gradient at the values and one at the
logits, the same for every agent of a seed: how strongly each path carries a learning signal back.
`under_eps` is the share of the trunk's weights whose squared gradient is below RMSprop's epsilon
(--optimizer-eps, 1e-5 by default, inside the square root): there RMSprop's step is about
lr * g / sqrt(eps), proportional to the gradient, so a part that receives a smaller gradient also moves
less. With a checkpoint, `optimizer_under_eps` gives the same share for each part's running mean
square, as training left it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    script: Literal["a2c_atari", "a2c_lstm_atari", "ppo_atari"] = "a2c_lstm_atari"
    """training script whose Agent is measured"""
    checkpoint: Optional[str] = None
    """checkpoint of that script (default: a fresh agent, initialised with --seed)"""
    env_id: str = "Breakout-v5"
    """game of the random play (a checkpoint's own game when one is given)"""
    frame_stack: int = 4
    """frames per observation (a checkpoint's own when one is given)"""
    lstm_skip: bool = True
    """a fresh a2c_lstm_atari agent's --lstm-skip, its default (a checkpoint's own when one is given; --no-lstm-skip:
    the LSTM alone before the heads); the other scripts have no such flag"""
    steps: int = 64
    """steps of random play per env"""
    num_envs: int = 16
    """envs of random play"""
    seed: int = 1
    """seed of the envs, the random actions and a fresh agent"""
    env_backend: Literal["auto", "envpool", "ale"] = "auto"
    """emulator backend"""


def known_args(module, saved: dict) -> dict:
    """A checkpoint's args that the script still has (a flag removed since, as --lstm-layer-norm, is left out)."""
    return {k: v for k, v in saved.items() if k in {f.name for f in dataclasses.fields(module.Args)}}


def random_play(module, args, steps: int, num_envs: int, backend: str, seed: int):
    """(observations (steps, envs, frame_stack, 84, 84) uint8, game starts (steps, envs) bool, number of actions)."""
    envs = module.make_envs(args, backend, seed, num_envs)
    frames, lives = envs.reset()
    stack, stats = (
        module.FrameStack(num_envs, args.frame_stack, torch.device("cpu")),
        module.EpisodeStats(num_envs, lives),
    )
    new_game, rng, observations, starts = np.ones(num_envs, dtype=bool), np.random.default_rng(seed), [], []
    stack.push(torch.from_numpy(frames), torch.from_numpy(new_game))
    try:
        for _ in range(steps):
            observations.append(stack.obs.clone())
            starts.append(torch.from_numpy(new_game.copy()))
            new_game = stats.ended.copy()  # these envs reset on this step
            frames, rewards, terminated, truncated, lives = envs.step(rng.integers(envs.num_actions, size=num_envs))
            stats.update(rewards, terminated, truncated, lives)
            stack.push(torch.from_numpy(frames), torch.from_numpy(new_game))
    finally:
        envs.close()
    return torch.stack(observations), torch.stack(starts), envs.num_actions


@torch.no_grad()
def head_inputs(module, agent, obs: torch.Tensor, starts: torch.Tensor) -> dict:
    """Mean |x| per unit and L1 norm per observation of what the heads read (and the LSTM agent's trunk)."""
    steps, num_envs = starts.shape
    trunk = agent.network(obs.flatten(0, 1).float().contiguous(memory_format=torch.channels_last))
    figures = {}
    if hasattr(agent, "lstm"):
        state = agent.initial_state(num_envs, torch.device("cpu"))
        out, _ = module.unroll_lstm(agent.lstm, trunk.view(steps, num_envs, -1), state, starts)
        figures["cnn_mean_abs"] = trunk.abs().mean().item()
        cnn = trunk
        trunk = out.flatten(0, 1)  # what the heads read
        if agent.skip:  # and the CNN's features beside it
            trunk = torch.cat([trunk, cnn], -1)
    return {"mean_abs": trunk.abs().mean().item(), "l1": trunk.abs().sum(-1).mean().item(), **figures}


def gradients(module, agent, obs: torch.Tensor, starts: torch.Tensor, seed: int, eps: float = 1e-5) -> dict:
    """Gradient norm of each part for a fixed unit-normal gradient at the values, then at the logits."""
    steps, num_envs = starts.shape
    generator = torch.Generator().manual_seed(seed)
    parts = {"trunk": agent.network, "lstm": getattr(agent, "lstm", None), "actor": agent.actor, "critic": agent.critic}
    figures = {}
    for output in ("values", "logits"):
        agent.zero_grad(set_to_none=True)
        if hasattr(agent, "lstm"):
            logits, values, _ = agent(obs, agent.initial_state(num_envs, torch.device("cpu")), starts)
        else:
            logits, values = agent(obs.flatten(0, 1))
        out = values if output == "values" else logits
        out.backward(torch.randn(out.shape, generator=generator) / out.numel())
        norms = {
            name: torch.cat([p.grad.flatten() for p in part.parameters() if p.grad is not None]).norm().item()
            for name, part in parts.items()
            if part is not None and any(p.grad is not None for p in part.parameters())
        }
        trunk = torch.cat([p.grad.flatten() for p in agent.network.parameters()])
        figures[output] = norms | {"under_eps": (trunk.square() < eps).float().mean().item()}
    agent.zero_grad(set_to_none=True)
    return figures


def optimizer_under_eps(agent, optimizer: dict) -> dict:
    """A checkpoint's RMSprop: for each part, the share of weights whose running mean square is below eps."""
    squares = {i: s["square_avg"] for i, s in optimizer["state"].items() if "square_avg" in s}
    eps, figures = optimizer["param_groups"][0]["eps"], {}
    for index, (name, _) in enumerate(agent.named_parameters()):
        if index in squares:
            part = name.split(".")[0].replace("network", "trunk")
            figures.setdefault(part, []).append(squares[index].flatten() < eps)
    return {part: torch.cat(flags).float().mean().item() for part, flags in figures.items()}


def main(args: Args) -> dict:
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(args.script)
    if args.steps < 1 or args.num_envs < 1:
        sys.exit(f"error: --steps and --num-envs must be positive, got {args.steps} and {args.num_envs}.")
    script_args = module.Args(env_id=args.env_id, frame_stack=args.frame_stack, cuda=False)
    if hasattr(script_args, "lstm_skip"):
        script_args.lstm_skip = args.lstm_skip
    state = None
    if args.checkpoint:
        try:
            state = module.load_checkpoint(args.checkpoint)
        except module.UsageError as e:
            sys.exit(f"error: {e}")
        if state["script"] != module.SCRIPT:
            sys.exit(f"error: {state['path']!r} was written by {state['script']}.py, not {args.script}.py.")
        before = {k: v for k, v in module.NETWORK_ARGS.items() if v is not None}  # a checkpoint older than a flag
        script_args = dataclasses.replace(module.Args(**known_args(module, before | state["args"])), cuda=False)
    backend = module.resolve_backend(args.env_backend)
    obs, starts, num_actions = random_play(module, script_args, args.steps, args.num_envs, backend, args.seed)
    torch.manual_seed(args.seed)
    sizes = (
        {
            "lstm_hidden_size": script_args.lstm_hidden_size,
            "skip": script_args.lstm_skip,
        }
        if hasattr(script_args, "lstm_hidden_size")
        else {}
    )
    agent = module.Agent(num_actions, script_args.frame_stack, **sizes)
    if state:
        module.load_weights(agent, state)
    result = {
        "script": args.script,
        "agent": f"{state['path']} (step {state['global_step']:,})" if state else f"fresh, seed {args.seed}",
        "how": f"{args.steps} steps x {args.num_envs} envs of random play on {script_args.env_id} ({backend}, "
        f"seed {args.seed}, {script_args.frame_stack} stacked frames)",
        **head_inputs(module, agent, obs, starts),
        "gradients": gradients(module, agent, obs, starts, args.seed, getattr(script_args, "optimizer_eps", 1e-5)),
    }
    if state and state.get("optimizer", {}).get("state"):  # RMSprop's mean squares (none under Adam)
        result["optimizer_under_eps"] = optimizer_under_eps(agent, state["optimizer"]) or None
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
