"""PPO for Atari: clipped-surrogate PPO (Schulman et al. 2017, arXiv 1707.06347), standard Atari protocol.

    python ppo_atari.py --env-id Breakout-v5 --num-envs 8

Above the divider line, the algorithm: Args, network, returns, rollout, PPO loss and update, train().
Below it, the harness every script holds word for word: envs, evaluation, checkpoints, processes, the run, main().

Where it differs from CleanRL's ppo_atari_envpool.py, on purpose: `dones[t]` marks the transition at
step t that ended an episode, so GAE reads `1 - dones[t]` with no shift; a `valid` mask keeps out of
the loss the steps whose action was not the agent's (the backend's reset step; FIRE after a lost
life, as baselines' FireResetEnv); logged returns are whole-game scores; `--target-kl` is checked
every minibatch; logged loss figures are means over the update; observations are stored frames last
(channels_last); the emulators of one half of the envs step while the network acts on the other.
References: Huang et al., "The 37 Implementation Details of PPO" (2022); Machado et al. (JAIR 2018).
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributions import Categorical
from torch.utils.tensorboard import SummaryWriter

SCRIPT = Path(__file__).stem  # a copy of this file is a new experiment, under its own name
# A checkpoint only loads into the same network; each flag: the value a checkpoint older than it was made with
NETWORK_ARGS = {"frame_stack": None, "full_action_space": None}  # None: every checkpoint holds it

@dataclass
class Args:
    # --- algorithm ---
    total_timesteps: int = 10_000_000  # total agent steps over all envs (one step = frame_skip frames)
    learning_rate: float = 2.5e-4  # Adam learning rate
    anneal_lr: bool = True  # anneal the learning rate linearly to 0 over --decay-steps
    decay_steps: int = 0  # agent steps over which --anneal-lr takes the rate to 0, then holds it (0: the whole run)
    num_envs: int = 8  # number of parallel games
    num_steps: int = 128  # steps per env in each rollout
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # lambda of generalized advantage estimation (1.0: n-step bootstrapped returns)
    num_minibatches: int = 4  # minibatches per epoch; num_envs * num_steps must be divisible by it
    update_epochs: int = 4  # passes over each rollout
    norm_adv: bool = True  # normalise advantages within each minibatch
    clip_coef: float = 0.1  # surrogate clipping coefficient
    clip_vloss: bool = True  # clip the value loss around the old values, as the PPO paper's code does
    ent_coef: float = 0.01  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # global gradient norm clip
    target_kl: Optional[float] = None  # stop the update early once a minibatch's approximate KL exceeds this
    checkpoint_every: int = 500  # save a checkpoint every N iterations (0: only at the end and on SIGINT/SIGTERM)

    # --- experiment (common to every script) ---
    exp_name: str = SCRIPT  # name of this experiment, part of the default run name
    seed: int = 1  # seed of the environments, the network initialisation and action sampling
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # use CUDA when it is available (falls back to the CPU otherwise)
    compile: bool = False  # wrap the policy step, the return computation and the loss in torch.compile
    autocast: Literal["off", "bf16"] = "off"  # bf16: forward passes and losses under autocast; weights, optimizer fp32
    threads: int = 0  # CPU threads for torch (0: torch's default)
    runs_dir: str = "runs"  # folder that holds one sub-folder per run
    run_name: Optional[str] = None  # name of the run folder (default: <env>__<exp_name>__<seed>__<unix time>)
    resume: Optional[str] = None  # checkpoint file (or run folder, meaning its latest checkpoint) to continue from
    keep_checkpoints: int = 0  # keep the newest N periodic checkpoints (0: all); latest.pt, best.pt, the final one stay
    log_interval: float = 10.0  # seconds between console progress lines
    dist_timeout: float = 1800.0  # torchrun: seconds to wait for the other processes before failing (never hang)

    # --- environment (common to every script) ---
    env_id: str = "Breakout-v5"  # Atari game: Breakout-v5, ALE/Breakout-v5 and BreakoutNoFrameskip-v4 all mean Breakout
    env_backend: Literal["auto", "envpool", "ale"] = "auto"  # auto: envpool if it imports, else ale-py's AtariVectorEnv
    env_threads: int = 0  # emulator worker threads (0: the backend's default)
    overlap: bool = True  # step one half of the envs while the policy acts on the other (same transitions)
    frame_skip: int = 4  # agent steps repeat the action this many frames; the observation max-pools the last two
    frame_stack: int = 4  # number of most recent frames the network sees
    noop_max: int = 30  # at the start of every game, play a random number (up to this) of no-op actions
    sticky_actions: float = 0.0  # probability of repeating the previous action (Machado et al. 2018 use 0.25)
    full_action_space: bool = False  # use all 18 actions instead of the game's minimal set (Machado et al. 2018)
    episodic_life: bool = True  # a lost life ends the episode for learning (the game goes on; scores stay whole-game)
    clip_rewards: bool = True  # learn from sign(reward); logged returns are always the raw game score
    max_episode_frames: int = 108_000  # truncate a game after this many emulator frames (108,000 = 30 minutes)
    time_limit_bootstrap: bool = False  # on truncation by the frame cap, bootstrap from the final observation's value

    # --- evaluation and tracking (common to every script) ---
    eval_every: int = 500_000  # agent steps between evaluations on separate games (0: never); one more runs at the end
    eval_episodes: int = 10  # whole games per evaluation (no episodic life; the raw game score)
    eval_greedy: bool = False  # evaluate with the most likely action instead of sampling
    capture_video: bool = False  # record each evaluation's first game in colour to runs/<run>/videos/eval_<step>.mp4
    track: bool = False  # mirror the TensorBoard scalars and the evaluation videos to Weights & Biases (needs wandb)
    wandb_project_name: str = "single-file-atari"  # W&B project of the run
    wandb_entity: Optional[str] = None  # W&B team or user of the run (default: yours)


def check_args(args: Args, world_size: int = 1) -> None:
    check_common_args(args, world_size)
    for name in ["num_minibatches", "update_epochs"]:
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    for name in ["ent_coef", "vf_coef", "max_grad_norm", "clip_coef", "decay_steps"]:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}.")
    if args.target_kl is not None and args.target_kl <= 0:
        raise UsageError(f"--target-kl must be positive when given, got {args.target_kl}.")
    local_batch = args.num_envs // world_size * args.num_steps
    if local_batch % args.num_minibatches != 0:
        per_process = f" per process ({world_size} processes)" if world_size > 1 else ""
        raise UsageError(f"--num-envs x --num-steps{per_process} ({local_batch}) must be divisible by "
                         f"--num-minibatches ({args.num_minibatches}).")


# --- Network --------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class PixelConv2d(nn.Conv2d):
    """Conv2d of x / 255 for raw uint8 pixels, computed as a conv of x with weight / 255: the same
    function and gradients as scaling the input, without a pass over the whole batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight / 255.0, self.bias)


class Agent(nn.Module):
    """Nature-CNN trunk (Mnih et al. 2015) with an actor and a critic head.

    Takes uint8 observations (batch, frame_stack, 84, 84); channels_last strides (as the frame
    stack and rollout buffer hold them) make the convolutions markedly faster on CPU and GPU.
    """

    def __init__(self, num_actions: int, frame_stack: int = 4):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(PixelConv2d(frame_stack, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.network(obs.float().contiguous(memory_format=torch.channels_last))
        # fp32 outputs (a no-op without --autocast): the distributions and the losses stay fp32
        return self.actor(hidden).float(), self.critic(hidden).squeeze(-1).float()


def policy_step(agent: Agent, obs: torch.Tensor):
    """Sample actions for a batch of observations: (action, log-prob, value)."""
    logits, value = agent(obs)
    probs = Categorical(logits=logits, validate_args=False)
    action = probs.sample()
    return action, probs.log_prob(action), value


def evaluation_policy(agent: Agent, args: Args, num_envs: int, device: torch.device):
    """The agent as evaluate() plays it: logits for one observation per env (game starts and lost lives
    matter only to a recurrent agent)."""
    return lambda obs, new_game, life_lost: agent(obs)[0]


# --- Returns and advantages -----------------------------------------------------------------------


def compute_gae(rewards, values, dones, last_value, gamma: float, gae_lambda: float):
    """Generalized advantage estimation (Schulman et al. 2016) over (num_steps, num_envs) tensors: nothing is
    bootstrapped across a step with dones[t] = 1; with gae_lambda = 1, n-step bootstrapped returns."""
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last_gae = delta + gamma * gae_lambda * not_done * last_gae
        advantages[t] = last_gae
        next_value = values[t]
    return advantages, advantages + values


def bootstrap_truncations(rewards, values, last_value, truncations, gamma: float):
    """Add gamma * V(final observation) to the reward of steps cut by the frame cap. With next-step autoreset
    that observation is the next step's, so its value is values[t + 1] (last_value at the rollout's end)."""
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)
    return rewards + gamma * truncations * next_values


# --- Rollout --------------------------------------------------------------------------------------


class RolloutBuffer:
    """One rollout on the device. Per-step scalars share one (num_steps, 4, num_envs) tensor so
    each env step costs a single host-to-device copy."""

    def __init__(self, num_steps: int, num_envs: int, frame_stack: int, device: torch.device):
        # Observations as the frame stack holds them (frames last); `obs` is the channels_last view.
        self.frames = torch.zeros(num_steps, num_envs, 84, 84, frame_stack, dtype=torch.uint8, device=device)
        self.obs = self.frames.permute(0, 1, 4, 2, 3)
        self.actions = torch.zeros(num_steps, num_envs, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(num_steps, num_envs, device=device)
        self.values = torch.zeros(num_steps, num_envs, device=device)
        self.step_data = torch.zeros(num_steps, 4, num_envs, device=device)
        # receive_step()'s rows, which its docstring defines; one copy per step fills the four
        self.rewards, self.dones, self.truncations, self.valid = self.step_data.unbind(1)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] for a contiguous x, via index_select on flattened rows (several times faster on CPU)."""
    return x.flatten(1).index_select(0, idx).view(idx.shape[0], *x.shape[1:]) if x.dim() > 1 else x.index_select(0, idx)


def collect_rollout(policy, envs: EnvGroups, buf: RolloutBuffer, args: Args, device: torch.device):
    """Fill `buf` with num_steps steps of every env; returns the (score, length) of each game that ended.
    Each step, each group in turn takes in its emulators' step, then chooses its next actions and sets them
    going: with two groups the policy runs on one while the other's emulators step, every action still from
    the current policy and the env's latest frames. On a GPU, per group and step: one blocking copy of the
    actions to the host, copies of the step's data and frames in."""
    finished, num_steps = [], buf.obs.shape[0]
    for t in range(num_steps + 1):
        for group in envs:
            if t > 0:
                step, _, games = receive_step(group, args, device)
                buf.step_data[t - 1, :, group.columns].copy_(torch.from_numpy(step), non_blocking=True)
                finished += games
            if t < num_steps:
                send_actions(policy, group, buf, t, args)
    return finished


def send_actions(policy, group: EnvGroup, buf: RolloutBuffer, t: int, args: Args) -> None:
    """Choose the group's actions for step t and set its emulators stepping."""
    obs, columns = group.frame_stack.obs, group.columns
    buf.obs[t, columns] = obs
    with torch.no_grad():
        action, logprob, value = policy(obs)
    buf.actions[t, columns], buf.logprobs[t, columns], buf.values[t, columns] = action, logprob, value
    actions, forced = action.cpu().numpy(), fire_forced(group, args)
    group.envs.send(np.where(forced, group.envs.fire_action, actions) if forced.any() else actions)


# --- PPO loss and update --------------------------------------------------------------------------


def ppo_loss(agent: Agent, obs, actions, old_logprobs, advantages, returns, old_values, valid, *,
             clip_coef: float, clip_vloss: bool, norm_adv: bool, ent_coef: float, vf_coef: float,
             over_processes=lambda x: x):
    """Clipped-surrogate PPO loss over one minibatch; steps with valid = 0 do not count.

    Returns the loss and its figures by name: loss, policy_loss, value_loss, entropy, approx_kl, clipfrac.
    Under torchrun each process holds a share of the minibatch and `over_processes` sums a tensor
    over all of them: means and advantage statistics are then the whole minibatch's, and summing
    the processes' gradients gives the whole minibatch's gradient. The figures are this process's
    parts of the whole minibatch's: summed over the processes they are the whole minibatch's.
    """
    logits, new_values = agent(obs)
    probs = Categorical(logits=logits, validate_args=False)
    new_logprobs = probs.log_prob(actions)
    entropy = probs.entropy()
    count = over_processes(valid.sum()).clamp(min=1.0)

    def mean(x):  # this process's part of the mean over the whole minibatch
        return (x * valid).sum() / count

    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = mean((ratio - 1) - log_ratio)  # low-variance estimator, Schulman's blog "Approximating KL"
        clipfrac = mean(((ratio - 1.0).abs() > clip_coef).float())
    if norm_adv:
        adv_mean = over_processes(mean(advantages))
        adv_std = (over_processes((((advantages - adv_mean) ** 2) * valid).sum()) / (count - 1).clamp(min=1.0)).sqrt()
        advantages = (advantages - adv_mean) / (adv_std + 1e-8)
    pg_loss = mean(torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)))
    if clip_vloss:
        v_clipped = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * mean(torch.max((new_values - returns) ** 2, (v_clipped - returns) ** 2))
    else:
        v_loss = 0.5 * mean((new_values - returns) ** 2)
    entropy_mean = mean(entropy)
    loss = pg_loss - ent_coef * entropy_mean + vf_coef * v_loss
    figures = {"loss": loss, "policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_mean,
               "approx_kl": approx_kl, "clipfrac": clipfrac}
    return loss, {name: value.detach() for name, value in figures.items()}  # this process's parts of them


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, loss_fn, batch: dict, args: Args,
               minibatch_size: int, over_processes=lambda x: x) -> dict[str, torch.Tensor]:
    """`update_epochs` passes of shuffled minibatches; returns each of ppo_loss's figures and the
    gradient norm before clipping (grad_norm), averaged over the minibatches taken.

    batch holds ppo_loss's tensor arguments by name, except the observations: batch["frames"]
    holds them frames last, (batch, 84, 84, frame_stack).
    """
    batch_size = batch["frames"].shape[0]
    hyperparameters = dict(clip_coef=args.clip_coef, clip_vloss=args.clip_vloss, norm_adv=args.norm_adv,
                           ent_coef=args.ent_coef, vf_coef=args.vf_coef, over_processes=over_processes)
    taken, grad_norms = [], []

    def means() -> dict[str, torch.Tensor]:  # summed over the processes once per update; left on the device
        parts = torch.stack([torch.stack([f[name] for f in taken]).mean() for name in taken[0]])
        return dict(zip(taken[0], over_processes(parts)), grad_norm=torch.stack(grad_norms).mean())

    for _ in range(args.update_epochs):
        order = torch.randperm(batch_size, device=batch["frames"].device)
        for start in range(0, batch_size, minibatch_size):
            mb = {k: gather_rows(v, order[start:start + minibatch_size]) for k, v in batch.items()}
            obs = mb.pop("frames").permute(0, 3, 1, 2)  # the channels_last view the network reads
            with autocast(args, obs.device):
                loss, figures = loss_fn(agent, obs, **mb, **hyperparameters)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sum_gradients(agent)  # under torchrun: every process now holds the whole minibatch's gradient
            grad_norms.append(nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm))  # before clipping
            optimizer.step()
            taken.append(figures)
            if args.target_kl is not None and over_processes(figures["approx_kl"]).item() > args.target_kl:
                return means()  # the KL limit ends the whole update, not only this epoch
    return means()


def learning_rate_at(iteration: int, num_iterations: int, args: Args) -> float:
    """--anneal-lr: linear from --learning-rate at the first iteration to 0 at --decay-steps (0: the
    run's end, CleanRL's schedule), then 0; a 10M-step schedule lets a short run read like a long one's start."""
    if not args.anneal_lr:
        return args.learning_rate
    anneal_iterations = args.decay_steps / (args.num_envs * args.num_steps) if args.decay_steps else num_iterations
    return max(1.0 - (iteration - 1.0) / anneal_iterations, 0.0) * args.learning_rate


# --- Training -------------------------------------------------------------------------------------


def train(args: Args) -> dict:
    procs = Processes.from_environment()  # one process, or one of those torchrun started (its variables say)
    check_args(args, procs.world_size)
    backend = resolve_backend(args.env_backend)
    device = join_processes(procs, args)
    resume, run_dir = prepare_run(args, procs)
    seed_everything(args)
    keep_freed_memory()  # CPU updates reuse freed activations instead of page-faulting them back in
    set_threads(args, procs, device)
    num_envs = args.num_envs // procs.world_size  # this process's share of the envs
    batch_size = args.num_envs * args.num_steps  # over all processes
    minibatch_size = num_envs * args.num_steps // args.num_minibatches  # this process's share of each
    num_iterations = args.total_timesteps // batch_size

    start_iteration = 1 if resume is None else resume["iteration"] + 1
    global_step = 0 if resume is None else resume["global_step"]
    # A resumed run starts fresh games (emulator state is not saved), seeded apart from the first;
    # each process's envs take the next num_envs seeds, so no two processes share one.
    envs = EnvGroups(args, backend, args.seed + (start_iteration - 1) * args.num_envs + procs.rank * num_envs,
                     num_envs, device)
    agent = Agent(envs.num_actions, args.frame_stack).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    if resume is not None:
        load_weights(agent, resume)
        optimizer.load_state_dict(resume["optimizer"])
        restore_rng(resume, args, procs, device)
    elif procs.world_size > 1:
        torch.manual_seed(args.seed + 100_003 * procs.rank)  # the same initial weights, then each its own actions

    def policy(obs):
        with autocast(args, device):
            return policy_step(agent, obs)

    gae_fn, loss_fn = compute_gae, ppo_loss
    if args.compile:
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True  # sample actions from the eager RNG stream
        policy, gae_fn, loss_fn = torch.compile(policy), torch.compile(gae_fn), torch.compile(loss_fn)

    buf = RolloutBuffer(args.num_steps, num_envs, args.frame_stack, device)

    evaluate_agent = functools.partial(evaluate, agent, args, backend, device)
    iteration = start_iteration - 1
    with closing(envs), RunLog(args, run_dir, resume, agent, optimizer, envs.num_actions, evaluate_agent, procs) as run:
        for iteration in range(start_iteration, num_iterations + 1):
            optimizer.param_groups[0]["lr"] = learning_rate_at(iteration, num_iterations, args)

            with rollout_threads(envs, device):
                games = collect_rollout(policy, envs, buf, args, device)
            global_step += batch_size
            with torch.no_grad(), autocast(args, device):
                last_value = agent(envs.obs)[1]
                rewards = buf.rewards
                if args.time_limit_bootstrap:
                    rewards = bootstrap_truncations(rewards, buf.values, last_value, buf.truncations, args.gamma)
                advantages, returns = gae_fn(rewards, buf.values, buf.dones, last_value, args.gamma, args.gae_lambda)

            batch = {"frames": buf.frames.flatten(0, 1), "actions": buf.actions.flatten(),
                     "old_logprobs": buf.logprobs.flatten(), "advantages": advantages.flatten(),
                     "returns": returns.flatten(), "old_values": buf.values.flatten(), "valid": buf.valid.flatten()}
            figures = ppo_update(agent, optimizer, loss_fn, batch, args, minibatch_size, sum_over_processes)
            figures["explained_variance"] = explained_variance(buf.values, returns, buf.valid, sum_over_processes)
            figures = to_host(figures)

            run.log_iteration(iteration, global_step, games, optimizer.param_groups[0]["lr"], figures)
            if evaluation_due(global_step, batch_size, args.eval_every) and run.evaluate(global_step):
                run.save_checkpoint(iteration, global_step, args.keep_checkpoints, best=True)  # as best.pt
            if run.stop_requested(iteration):  # SIGINT/SIGTERM to any process: finish() writes the checkpoint
                break
            if args.checkpoint_every and iteration % args.checkpoint_every == 0 and iteration < num_iterations:
                run.save_checkpoint(iteration, global_step, args.keep_checkpoints)
        return run.finish(iteration, global_step)


# ============================== harness: the same text in every script below this line ==============================


# --- Arguments every script shares, checked before anything is built ------------------------------


class UsageError(Exception):
    """Bad flags or inputs, reported as one sentence before any env or model is built."""


def check_common_args(args: Args, world_size: int) -> None:
    """Checks of the flags every script shares (the game against ale-py's ROM list); each failure is one sentence."""
    for name in ["num_envs", "num_steps", "total_timesteps", "frame_skip", "frame_stack",
                 "max_episode_frames", "learning_rate", "log_interval", "dist_timeout"]:
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    for name in ["noop_max", "checkpoint_every", "keep_checkpoints", "threads", "env_threads"]:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}.")
    if not 0.0 <= args.sticky_actions <= 1.0:
        raise UsageError(f"--sticky-actions must lie in [0, 1], got {args.sticky_actions}.")
    if not 0.0 < args.gamma <= 1.0:
        raise UsageError(f"--gamma must lie in (0, 1], got {args.gamma}.")
    if not 0.0 <= args.gae_lambda <= 1.0:
        raise UsageError(f"--gae-lambda must lie in [0, 1], got {args.gae_lambda}.")
    if args.total_timesteps < args.num_envs * args.num_steps:
        raise UsageError(f"--total-timesteps ({args.total_timesteps}) must be at least one rollout, "
                         f"--num-envs x --num-steps ({args.num_envs * args.num_steps}).")
    atari_game(args.env_id)  # an unknown game fails here, before anything is built
    if args.num_envs % world_size != 0:
        raise UsageError(f"--num-envs ({args.num_envs}) is the total over all processes, so it must be "
                         f"divisible by their number ({world_size}).")
    if args.eval_every < 0:
        raise UsageError(f"--eval-every must not be negative, got {args.eval_every}.")
    if args.eval_every > 0 and args.eval_episodes <= 0:
        raise UsageError(f"--eval-episodes must be positive when evaluating, got {args.eval_episodes}.")
    if args.capture_video and args.eval_every == 0:
        raise UsageError("--capture-video records evaluation games, so it needs --eval-every above 0.")
    for flag, package in [("capture_video", "imageio-ffmpeg"), ("track", "wandb")]:
        if getattr(args, flag) and importlib.util.find_spec(package.replace("-", "_")) is None:
            raise UsageError(f"--{flag.replace('_', '-')} needs {package}: pip install {package}.")


# --- Environments: one interface over envpool and ale-py's vector env, the same protocol on both ---


def atari_game(env_id: str) -> str:
    """ROM name of a game id: 'Breakout-v5', 'ALE/Breakout-v5', 'BreakoutNoFrameskip-v4' -> 'breakout'."""
    from ale_py import roms

    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", name)
    game = name if name.islower() else re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if game not in roms.get_all_rom_ids():
        raise UsageError(f"--env-id {env_id!r} is not an Atari game ale-py knows (e.g. Breakout-v5, Pong-v5).")
    return game


def resolve_backend(backend: str) -> str:
    """'auto' means envpool where it imports (it has no wheel on some platforms), else ale-py."""
    has_envpool = importlib.util.find_spec("envpool") is not None
    if backend == "auto":
        return "envpool" if has_envpool else "ale"
    if backend == "envpool" and not has_envpool:
        raise UsageError("--env-backend envpool was asked for but envpool is not installed; use --env-backend ale.")
    return backend


class AtariEnvs:
    """`num_envs` games stepped in lockstep, each yielding one 84x84 grayscale frame per step.

    Rewards are raw scores, `terminated` means game over, `truncated` the frame cap, `lives` the
    lives counter: episodic life, reward clipping and frame stacking are the training script's.
    Both backends reset a finished game on the *next* step() and ignore that step's action.
    """

    def __init__(self, game: str, backend: str, num_envs: int, seed: int, *, frame_skip: int = 4,
                 noop_max: int = 30, sticky_actions: float = 0.0, full_action_space: bool = False,
                 max_episode_frames: int = 108_000, num_threads: int = 0, full_frames: bool = False):
        # full_frames: the 210x160 RGB screen instead of the network's input (for videos)
        self.backend, self.num_envs, self.seed, self.full_frames = backend, num_envs, seed, full_frames
        height, width = (210, 160) if full_frames else (84, 84)
        if backend == "envpool":
            import envpool

            task = "".join(part.capitalize() for part in game.split("_")) + "-v5"
            if task not in envpool.list_all_envs():
                raise UsageError(f"envpool has no {task}; use --env-backend ale.")
            # envpool seeds at construction (reset(seed=...) is ignored); its cap counts agent steps.
            self.envs = envpool.make_gymnasium(
                task, num_envs=num_envs, batch_size=num_envs, seed=seed, num_threads=num_threads,
                stack_num=1, frame_skip=frame_skip, noop_max=noop_max, img_height=height, img_width=width,
                gray_scale=not full_frames, episodic_life=False, reward_clip=False, use_fire_reset=True,
                repeat_action_probability=sticky_actions, full_action_space=full_action_space,
                max_episode_steps=max_episode_frames // frame_skip)
        else:
            from ale_py.vector_env import AtariVectorEnv

            # episodic_life=True here would restart the whole game on a life loss, and rewards
            # arrive clipped unless reward_clipping=False: both are handled by the script instead.
            self.envs = AtariVectorEnv(
                game=game, num_envs=num_envs, num_threads=num_threads, stack_num=1,
                frameskip=frame_skip, maxpool=True, noop_max=noop_max, img_height=height, img_width=width,
                grayscale=not full_frames, episodic_life=False, life_loss_info=False, reward_clipping=False,
                use_fire_reset=True, repeat_action_probability=sticky_actions,
                full_action_space=full_action_space, max_num_frames_per_episode=max_episode_frames)
        self.num_actions = int(self.envs.single_action_space.n)
        self.fire_action = fire_action_index(game, full_action_space)

    def frames(self, obs: np.ndarray) -> np.ndarray:
        if self.full_frames and self.backend == "envpool":
            return obs.transpose(0, 2, 3, 1)  # envpool puts RGB channels first
        return obs[:, 0]

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        obs, info = self.envs.reset() if self.backend == "envpool" else self.envs.reset(seed=self.seed)
        return self.frames(obs), info["lives"].astype(np.int64)

    def send(self, actions: np.ndarray) -> None:
        """Set every env stepping; the emulators run on their own threads until recv()."""
        self.envs.send(actions)

    def recv(self):
        """Wait for the step that send() began: (frames, rewards, terminated, truncated, lives), in env order."""
        obs, reward, terminated, truncated, info = self.envs.recv()
        return (self.frames(obs), reward.astype(np.float32), terminated.astype(bool), truncated.astype(bool),
                info["lives"].astype(np.int64))

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        self.envs.close()


def fire_action_index(game: str, full_action_space: bool) -> Optional[int]:
    """Index of FIRE in the game's action set, or None, read by loading its ROM into a bare emulator (with
    ALE's global logger set to errors only); both backends press FIRE when a game starts."""
    from ale_py import Action, ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path(game))
    actions = list(ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet())
    return actions.index(Action.FIRE) if Action.FIRE in actions else None


def make_envs(args: Args, backend: str, seed: int, num_envs: int, full_frames: bool = False) -> AtariEnvs:
    return AtariEnvs(atari_game(args.env_id), backend, num_envs, seed, frame_skip=args.frame_skip,
                     noop_max=args.noop_max, sticky_actions=args.sticky_actions,
                     full_action_space=args.full_action_space, max_episode_frames=args.max_episode_frames,
                     num_threads=args.env_threads, full_frames=full_frames)


class EpisodeStats:
    """Whole-game statistics on the host: raw rewards summed over all lives of a game.

    A game's return and length are reported when it ends (game over or the frame cap) and then
    reset, so nothing leaks across truncations. `ended` marks envs whose next step is a reset,
    `life_lost` those that lost a life on the last step.
    """

    def __init__(self, num_envs: int, lives: np.ndarray):
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)
        self.lives = lives.copy()
        self.ended = np.zeros(num_envs, bool)
        self.life_lost = np.zeros(num_envs, bool)

    def update(self, raw_rewards, terminated, truncated, lives):
        """Account one env step; returns (valid, life_lost, finished_returns, finished_lengths)."""
        valid = ~self.ended  # False where this step was the backend's reset (action ignored)
        life_lost = valid & (lives < self.lives)
        self.lives, self.life_lost = lives.copy(), life_lost
        self.returns += raw_rewards * valid
        self.lengths += valid
        self.ended = (terminated | truncated) & valid
        finished_returns, finished_lengths = self.returns[self.ended], self.lengths[self.ended]
        self.returns[self.ended] = 0.0
        self.lengths[self.ended] = 0
        return valid, life_lost, finished_returns, finished_lengths


def fire_forced(group: EnvGroup, args: Args) -> np.ndarray:
    """Envs whose next action is FIRE, not the agent's: after a lost life FIRE relaunches play, as
    baselines' FireResetEnv presses it on each episodic-life reset."""
    return group.episode_stats.life_lost & (args.episodic_life and group.envs.fire_action is not None)


class FrameStack:
    """Last `num_frames` frames per env on the device, uint8; history zeroed at an episode start.

    Frames are stored last, (num_envs, 84, 84, num_frames): `obs` is the (num_envs, num_frames,
    84, 84) view of them with channels_last strides, which the convolutions read without a copy.
    """

    def __init__(self, num_envs: int, num_frames: int, device: torch.device):
        self.frames = torch.zeros(num_envs, 84, 84, num_frames, dtype=torch.uint8, device=device)

    @property
    def obs(self) -> torch.Tensor:
        return self.frames.permute(0, 3, 1, 2)

    def push(self, frame: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        keep = (~episode_start).view(-1, 1, 1, 1).to(torch.uint8)
        self.frames = torch.cat([(self.frames * keep)[..., 1:], frame.unsqueeze(-1)], dim=-1)
        return self.obs


@dataclass
class EnvGroup:
    """Envs stepped together, with their frame stack, game statistics and columns in the rollout."""

    envs: AtariEnvs
    frame_stack: FrameStack
    episode_stats: EpisodeStats
    columns: slice


class EnvGroups(list):
    """This process's envs: one group, or with --overlap two halves, so that one half's emulators
    step while the policy runs on the other half's observations. Env i is seeded seed + i either
    way, so the same actions give the same games."""

    def __init__(self, args: Args, backend: str, seed: int, num_envs: int, device: torch.device):
        super().__init__()
        bounds = [0, num_envs // 2, num_envs] if args.overlap and num_envs > 1 else [0, num_envs]
        for start, stop in zip(bounds, bounds[1:]):
            envs = make_envs(args, backend, seed + start, stop - start)
            frames, lives = envs.reset()
            frame_stack = FrameStack(stop - start, args.frame_stack, device)
            first = torch.ones(stop - start, dtype=torch.bool, device=device)
            frame_stack.push(torch.from_numpy(frames).to(device), first)
            self.append(EnvGroup(envs, frame_stack, EpisodeStats(stop - start, lives), slice(start, stop)))
        self.num_actions = self[0].envs.num_actions

    @property
    def obs(self) -> torch.Tensor:
        """Every env's stacked frames, (num_envs, frame_stack, 84, 84)."""
        return torch.cat([g.frame_stack.obs for g in self]) if len(self) > 1 else self[0].frame_stack.obs

    def close(self) -> None:
        for group in self:
            group.envs.close()


def receive_step(group: EnvGroup, args: Args, device: torch.device) -> tuple[np.ndarray, np.ndarray, list]:
    """Take in the step the group's emulators were running: account its games, push its frames. Returns
    the step as float32 rows: rewards (sign-clipped with --clip-rewards); dones, the episode ended for
    learning (game over, the frame cap, or a lost life with --episodic-life); truncations, ended by the cap
    alone, to bootstrap through (with --time-limit-bootstrap); valid, 0 where the action was not the agent's
    (a reset step ignores it; after a lost life FIRE replaces it). Then the envs whose new frame begins a
    game, and the (score, length) of each game that ended."""
    resetting = group.episode_stats.ended.copy()  # these envs started a new game on this step
    forced = fire_forced(group, args)
    frames, raw_rewards, terminated, truncated, lives = group.envs.recv()
    valid, life_lost, returns, lengths = group.episode_stats.update(raw_rewards, terminated, truncated, lives)
    rewards = np.sign(raw_rewards) if args.clip_rewards else raw_rewards
    dones = terminated | truncated | (life_lost & args.episodic_life)
    truncations = truncated & ~terminated & args.time_limit_bootstrap
    group.frame_stack.push(torch.from_numpy(frames).to(device, non_blocking=True),
                           torch.from_numpy(resetting).to(device, non_blocking=True))
    step = np.stack([rewards, dones, truncations, valid & ~forced]).astype(np.float32)
    return step, resetting, list(zip(returns.tolist(), lengths.tolist()))


@contextmanager
def rollout_threads(envs: EnvGroups, device: torch.device):
    """With two env groups on the CPU, the network steps on one thread, so the other group's
    emulators have the other cores; the update gets every thread back."""
    threads = torch.get_num_threads()
    if len(envs) > 1 and device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- Precision and figures ------------------------------------------------------------------------


def autocast(args: Args, device: torch.device):
    """--autocast bf16: the ops torch.autocast lists as safe (convolutions, matrix products) run in
    bfloat16; everything else, and the weights, gradients and optimizer, stay fp32."""
    return torch.autocast(device.type, torch.bfloat16, enabled=args.autocast == "bf16")


def explained_variance(values: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor,
                       over_processes=lambda x: x) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over the valid steps of every process (1: perfect
    critic, <=0: useless, nan: the returns do not vary), left on the device."""
    count = over_processes(valid.sum())

    def variance(x):
        mean = over_processes((x * valid).sum()) / count
        return over_processes(((x - mean) ** 2 * valid).sum()) / (count - 1)

    var_y = torch.where(count > 1, variance(returns), 0.0)
    return torch.where(var_y == 0, torch.nan, 1 - variance(returns - values) / var_y)


def to_host(figures: dict[str, torch.Tensor]) -> dict[str, float]:
    """An iteration's figures (0-d tensors on the device) as floats, in one device-to-host copy."""
    return dict(zip(figures, torch.stack([value.float() for value in figures.values()]).tolist()))


# --- Evaluation on whole games (raw scores, as rlib's validation envs) and its videos -------------


@torch.no_grad()
def evaluate(agent: nn.Module, args: Args, backend: str, device: torch.device, seed: int,
             video: Optional[Path] = None) -> np.ndarray:
    """Scores of --eval-episodes whole games played by evaluation_policy(agent). Each env plays a fixed
    quota of games, so short games are not over-represented by parallel play. Actions are sampled from
    a generator of their own, so an evaluation leaves training's random stream, and so its result,
    untouched. It plays in fp32 even under --autocast bf16, as sample.py does: the score of the weights
    as saved. With `video`, env 0's first game is also written there in full colour."""
    num_envs = min(args.eval_episodes, args.num_envs)
    quota = np.full(num_envs, args.eval_episodes // num_envs)
    quota[: args.eval_episodes % num_envs] += 1
    generator = torch.Generator(device).manual_seed(seed)
    envs, recorder = make_envs(args, backend, seed, num_envs), None
    frame_stack = FrameStack(num_envs, args.frame_stack, device)
    policy = evaluation_policy(agent, args, num_envs, device)
    scores: list[float] = []
    played = np.zeros(num_envs, np.int64)
    try:
        recorder = GameRecorder(args, backend, seed, video) if video is not None else None
        frames, lives = envs.reset()
        new_game = np.ones(num_envs, dtype=bool)  # the observation begins a game
        frame_stack.push(torch.from_numpy(frames).to(device), torch.from_numpy(new_game).to(device))
        episode_stats = EpisodeStats(num_envs, lives)
        while (played < quota).any():
            logits = policy(frame_stack.obs, new_game, episode_stats.life_lost)
            if args.eval_greedy:
                actions = logits.argmax(-1)
            else:
                actions = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
            new_game = episode_stats.ended.copy()  # these envs reset on this step
            actions = actions.cpu().numpy()
            if args.episodic_life and envs.fire_action is not None:  # as in training: FIRE after a lost life
                actions = np.where(episode_stats.life_lost, envs.fire_action, actions)
            frames, raw_rewards, terminated, truncated, lives = envs.step(actions)
            _, _, returns, _ = episode_stats.update(raw_rewards, terminated, truncated, lives)
            if recorder is not None:
                recorder.step(actions, game_over=episode_stats.ended[0])
            for i, score in zip(np.flatnonzero(episode_stats.ended), returns):
                if played[i] < quota[i]:
                    scores.append(float(score))
                played[i] += 1
            frame_stack.push(torch.from_numpy(frames).to(device), torch.from_numpy(new_game).to(device))
    finally:
        envs.close()
        if recorder is not None:
            recorder.close()
    return np.array(scores)


def warn(message: str) -> None:
    """One line on stderr for what goes wrong without stopping the run (a video, W&B)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def write_video(path: Path, frames: list, fps: float) -> Optional[Path]:
    """An H.264 MP4 through the ffmpeg binary that imageio-ffmpeg ships, so no system ffmpeg is
    needed; a failing encoder is one warning line and no file (None), never a stopped run."""
    tmp = path.with_name(path.stem + ".tmp.mp4")
    try:
        import imageio_ffmpeg

        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = frames[0].shape[:2]
        writer = imageio_ffmpeg.write_frames(str(tmp), (width, height), fps=fps, codec="libx264",
                                             macro_block_size=1, ffmpeg_log_level="error")
        writer.send(None)  # start the encoder
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
        return path
    except Exception as e:
        tmp.unlink(missing_ok=True)
        warn(f"could not write the video {str(path)!r} ({first_line(e)}); going on without it.")
        return None


class GameRecorder:
    """Env 0's first game of an evaluation in full colour, at the game's real rate: a one-env twin
    emulator with env 0's seed, given env 0's actions, replays that game exactly (tested on both
    backends), so the network's input stays 84x84 grayscale."""

    def __init__(self, args: Args, backend: str, seed: int, path: Path):
        self.envs = make_envs(args, backend, seed, 1, full_frames=True)
        self.path, self.fps = path, 60.0 / args.frame_skip  # one frame per agent step at the emulator's 60 Hz
        self.frames, self.recording = [self.envs.reset()[0][0]], True

    def step(self, actions: np.ndarray, game_over: bool) -> None:
        if self.recording:
            self.frames.append(self.envs.step(actions[:1])[0][0])
            self.recording = not game_over

    def close(self) -> Optional[Path]:
        self.envs.close()
        return write_video(self.path, self.frames, self.fps)


# --- Checkpoints: each written once, atomically; loadable with weights_only=True ------------------


class CheckpointError(Exception):
    """A checkpoint could not be written (disk full, permissions); every older one is still intact."""


class Diverged(Exception):
    """An update made the loss or the gradient non-finite; nothing from it on was saved."""


def first_line(e: Exception) -> str:
    """An exception's message in one short line, for a one-sentence error."""
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__


def replace_atomically(path: Path, write) -> None:
    """write(tmp), then rename tmp to `path`: `path` is the old file or the new one, never part of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except Exception as e:  # disk full or no permission: the operating system's reason, as it said it
        tmp.unlink(missing_ok=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
        raise CheckpointError(f"could not write the checkpoint {str(path)!r}: {reason}.") from None


def save_bytes(state: dict, path: Path) -> None:
    """torch.save into memory, then one plain write: a refusal arrives as the OSError that names it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same file under a second name, not written twice
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, target)


def write_checkpoint(run_dir: Path, state: dict, keep: int = 0, best: bool = False) -> Path:
    """checkpoints/iter_<NNNNNN>.pt, then latest.pt (and with `best`, best.pt) made the same file; with
    keep > 0, only the newest `keep` iter_ files stay (latest.pt and best.pt keep their own links)."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iter_{state['iteration']:06d}.pt"
    replace_atomically(path, lambda tmp: save_bytes(state, tmp))
    for name in ["latest.pt", "best.pt"] if best else ["latest.pt"]:
        replace_atomically(folder / name, lambda tmp: link_or_copy(path, tmp))
    if keep > 0:
        periodic = sorted(folder.glob("iter_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for old in periodic[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, or UsageError with one sentence; never runs code from the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt" if (path / "checkpoints").is_dir() else path / "latest.pt"
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, empty, foreign, or a pickle that would run code
        raise UsageError(f"{str(path)!r} is not a loadable checkpoint ({first_line(e)}).") from None
    if not isinstance(state, dict) or not {"script", "args", "model", "iteration"} <= state.keys():
        raise UsageError(f"{str(path)!r} is not a checkpoint written by these scripts.")
    state["path"] = str(path)
    return state


def rng_state(device: torch.device) -> dict:
    """This process's random streams: the CPU's, and its own GPU's when it trains on one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        if torch.is_tensor(state.get("cuda")):  # action sampling and minibatch order run on this stream
            torch.cuda.set_rng_state(state["cuda"], device)
        else:
            warn("the checkpoint holds no CUDA random state for this process (written on the CPU or by an older "
                 "version): sampling on the GPU goes on from a fresh stream, so this resume is not exact.")


def check_resume(state: dict, args: Args) -> None:
    """The checkpoint must come from this script, for this game, with the same network shape."""
    if state["script"] != SCRIPT:
        raise UsageError(f"{state['path']!r} was written by {state['script']}.py, not {SCRIPT}.py.")
    if "optimizer" not in state or "rng" not in state:
        raise UsageError(f"{state['path']!r} holds what play-back needs (a Hub folder's), not the optimizer and "
                         "random state a resume needs: resume from the run's own checkpoints/.")
    saved = state["args"]
    if atari_game(saved["env_id"]) != atari_game(args.env_id):
        raise UsageError(f"{state['path']!r} is a checkpoint for {saved['env_id']}, not {args.env_id}.")
    for name, before in NETWORK_ARGS.items():  # a checkpoint older than a flag was made with its `before`
        if (was := saved.get(name, before)) != getattr(args, name):
            raise UsageError(f"{state['path']!r} was trained with --{name.replace('_', '-')} {was}, "
                             f"not {getattr(args, name)}.")


def load_weights(agent: nn.Module, state: dict) -> None:
    """The checkpoint's weights into `agent`, or UsageError naming the first one that does not fit."""
    own, saved = agent.state_dict(), state["model"]
    for name in [*own, *saved]:
        if name not in own or name not in saved:
            where = "the checkpoint" if name in saved else f"{SCRIPT}.py's network"
            raise UsageError(f"{state['path']!r} does not fit {SCRIPT}.py's network: only {where} has {name}.")
        if own[name].shape != saved[name].shape:
            raise UsageError(f"{state['path']!r} does not fit {SCRIPT}.py's network: {name} is "
                             f"{tuple(saved[name].shape)} there, {tuple(own[name].shape)} here.")
    agent.load_state_dict(saved)


# --- Processes: data-parallel under torchrun; one process and no process group otherwise ----------


@dataclass
class Processes:
    """This process's place among torchrun's processes: rank 0 of 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    main = property(lambda self: self.rank == 0, doc="rank 0 alone writes the run folder, logs and prints")

    @staticmethod
    def from_environment() -> "Processes":  # torchrun sets these variables for every process it starts
        names = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"]
        return Processes(*(int(os.environ.get(name, default)) for name, default in zip(names, [0, 1, 0, 1])))


def join_processes(procs: Processes, args: Args) -> torch.device:
    """This process's device: `cuda:LOCAL_RANK` (NCCL) where there are GPUs, else the CPU (gloo)."""
    cuda = args.cuda and torch.cuda.is_available()
    if cuda and procs.local_world_size > torch.cuda.device_count():  # every process sees it: none waits for others
        raise UsageError(f"{procs.local_world_size} processes per node need as many GPUs, but "
                         f"{torch.cuda.device_count()} are visible; lower --nproc-per-node or pass --no-cuda.")
    device = torch.device(f"cuda:{procs.local_rank}" if cuda and procs.world_size > 1 else "cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = not args.torch_deterministic  # autotuned kernels, when allowed to vary
        torch.set_float32_matmul_precision("high")  # TF32 matrix products on GPUs that have them
    if procs.world_size > 1:
        if cuda:
            torch.cuda.set_device(device)
        timeout = datetime.timedelta(seconds=args.dist_timeout)
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun keeps its store across restarts: keys of this attempt's own keep a restarted process
        # from reading a dead process's address.
        store = dist.PrefixStore(f"attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}", store)
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world_size,
                                timeout=timeout, device_id=device if cuda else None)
    return device


def set_threads(args: Args, procs: Processes, device: torch.device) -> None:
    """--threads, or each CPU process's share of the machine's cores when torchrun starts several."""
    if args.threads:
        torch.set_num_threads(args.threads)
    elif procs.local_world_size > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs.local_world_size))


def sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    """A copy of x summed over every process (no gradient flows through it); x itself in one process."""
    if not dist.is_initialized():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def sum_gradients(agent: nn.Module) -> None:
    """Sum every parameter's gradient over the processes, in one collective (nothing in one process)."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in agent.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    for g, summed in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(summed.view_as(g))


def all_gather(item, procs: Processes) -> list:
    """Every process's `item`, in rank order, on every process (one collective; no-op for one process)."""
    if procs.world_size == 1:
        return [item]
    items = [None] * procs.world_size
    dist.all_gather_object(items, item)
    return items


def restore_rng(resume: dict, args: Args, procs: Processes, device: torch.device = torch.device("cpu")) -> None:
    """Each process's RNG state from the checkpoint when it was written by as many processes;
    otherwise new streams, said in one line."""
    saved = resume.get("rng_by_rank", [resume["rng"]])
    if len(saved) == procs.world_size:
        set_rng_state(saved[procs.rank], device)
        return
    torch.manual_seed(args.seed + 100_003 * procs.rank + resume["iteration"])
    if procs.main:
        print(f"resuming on {procs.world_size} process(es) a run checkpointed on {len(saved)}: the model, optimizer, "
              f"step and schedule continue; the RNG streams were reseeded", flush=True)


# --- The run: its folder, seeds, TensorBoard and W&B, progress, signals ---------------------------


def find_run(args: Args) -> tuple[Optional[dict], Path]:
    """The checkpoint to resume (checked) and the run folder, made here (or refused in one sentence)
    before any env or network is built; refuses to start a fresh run in a folder that already holds
    checkpoints."""
    resume = load_checkpoint(args.resume) if args.resume else None
    if resume is not None:
        check_resume(resume, args)
        ckpt_dir = Path(resume["path"]).parent
        if ckpt_dir.name == "checkpoints":
            return resume, ckpt_dir.parent  # continue logging in the same folder
    # Under torchrun the run id names the run, so processes restarted after a failure find it again.
    stamp = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    stamp = stamp[:8] if stamp != "none" else str(int(time.time()))
    run_name = args.run_name or f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{stamp}"
    run_dir = Path(args.runs_dir) / run_name
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if resume is None and has_checkpoints and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0:
        resume = load_checkpoint(run_dir)  # torchrun restarted the processes: go on from the latest checkpoint
        check_resume(resume, args)
        print(f"restarted by torchrun: resuming from {resume['path']} (iteration {resume['iteration']})", flush=True)
    elif resume is None and has_checkpoints:
        raise UsageError(f"{str(run_dir)!r} already holds checkpoints; pass --resume or another --run-name.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only or missing place
        raise UsageError(f"cannot make the run folder {str(run_dir)!r}: {e.strerror or first_line(e)}.") from None
    return resume, run_dir


def prepare_run(args: Args, procs: Processes) -> tuple[Optional[dict], Path]:
    """find_run() on rank 0, its outcome (or its one-sentence refusal) sent to every process, so
    all start from the same checkpoint even without a shared filesystem."""
    outcome = [None]
    if procs.main:
        try:
            outcome = [find_run(args)]
        except UsageError as e:
            outcome = [e]
    if procs.world_size > 1:
        dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], UsageError):
        raise outcome[0]
    return outcome[0]


def provenance(args: Args, procs: Processes) -> dict:
    """What produces this run: this file's own bytes (sha256), the git commit around it (if any), the
    command, Python and package versions, the OS, and every process's machine (a collective)."""
    script = Path(__file__).resolve()
    def git_says(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=script.parent, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        git = {"commit": git_says("rev-parse", "HEAD"), "dirty": bool(git_says("status", "--porcelain", "-uno"))}
    except (OSError, subprocess.SubprocessError):
        git = None  # not a git checkout, or no git: the hash alone names the code
    versions = {}
    for package in ["torch", "numpy", "gymnasium", "ale-py", "envpool", "tyro", "tensorboard"]:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if args.cuda else []
    machine = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "gpus": gpus}
    gathered = all_gather(machine, procs)
    machines = [dict(m, ranks=[r for r, other in enumerate(gathered) if other == m]) for m in gathered]
    unique = [m for k, m in enumerate(machines) if m not in machines[:k]]  # each machine once, with its ranks
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "script": script.name,
            "script_sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "git": git,
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), "python": platform.python_version(),
            "packages": versions, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "os": platform.platform(), "processes": procs.world_size, "env_backend": resolve_backend(args.env_backend),
            "machines": unique}


def record_provenance(run_dir: Path, current: dict, resumed: bool = True) -> dict:
    """Write provenance.json at a run's start (a fresh start replaces the record of an attempt that
    left no checkpoint); a resume appends what changed (other code, versions or machines are
    legitimate, but visible). Returns the run's provenance as the file now holds it."""
    path = run_dir / "provenance.json"
    try:
        record = json.loads(path.read_text()) if path.is_file() and resumed else None
    except ValueError:  # unreadable: start a new record rather than stop the run
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("resumes"), list):
        record = dict(current, resumes=[])
    else:
        changed = {k: v for k, v in current.items() if k not in ("time", "command") and record.get(k) != v}
        record["resumes"].append({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "command": current["command"],
                                  "changed": changed})
    path.write_text(json.dumps(record, indent=2))
    return record


def surviving_best(run_dir: Path, resume: Optional[dict]) -> Optional[dict]:
    """The rule: best.pt is the best evaluated agent of the run's surviving history. A resume into a
    new folder (from a Hub folder's checkpoint, say) starts a new history; a resume from an older
    checkpoint of this folder abandons what came after it, best.pt included, which goes back to the
    best evaluation at or before the resume point (or, if that file is gone, is removed). Returns the
    best evaluation the run goes on from."""
    folder = run_dir / "checkpoints"
    if resume is None or Path(resume["path"]).resolve().parent != folder.resolve():
        return None
    best_eval, best = resume.get("best_eval"), folder / "best.pt"
    home = None
    if best_eval is not None:
        batch = resume["args"]["num_envs"] * resume["args"]["num_steps"]
        home = folder / f"iter_{best_eval['global_step'] // batch:06d}.pt"
        if best.is_file() and home.is_file() and best.samefile(home):
            return best_eval  # the usual case: best.pt is the file of the resume's best evaluation
    try:
        best_iteration = torch.load(best, map_location="cpu", weights_only=True)["iteration"]
    except Exception:  # none, or unreadable
        best_iteration = None
    if home is not None and best_iteration == int(home.stem.split("_")[1]):
        return best_eval  # a copy of it (a filesystem without hard links, or its iter_ file pruned)
    if home is not None and home.is_file():
        replace_atomically(best, lambda tmp: link_or_copy(home, tmp))
        return best_eval
    if best.is_file():
        best.unlink()
        warn(f"best.pt (iteration {best_iteration}) came after the resume point {resume['path']!r} and the best "
             "agent before it is gone: best.pt is removed; the next evaluation writes it again.")
    return None


def seed_everything(args: Args) -> None:
    """Seeds in CleanRL's order; a resumed run then restores its RNG state from the checkpoint."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks of up to 32 MiB instead of unmapping them, so that each CPU update step
    does not page-fault a minibatch's activations back in."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (macOS, musl): nothing to tune
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, at glibc's largest allowed value
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def progress_line(global_step: int, total: int, sps: float, elapsed: float, recent_returns: list) -> str:
    def hms(seconds: float) -> str:
        seconds = int(max(seconds, 0))
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    mean_return = f"{np.mean(recent_returns):.1f}" if recent_returns else "n/a"
    eta = hms((total - global_step) / max(sps, 1e-9))
    return (f"step {global_step:,}/{total:,} | SPS {sps:,.0f} | elapsed {hms(elapsed)} | ETA {eta} | "
            f"return {mean_return} (last {len(recent_returns)} games)")


def evaluation_due(global_step: int, batch_size: int, eval_every: int) -> bool:
    """True once per `eval_every` agent steps: at the first iteration that reaches each multiple."""
    return eval_every > 0 and global_step // eval_every > (global_step - batch_size) // eval_every


class Tracking:
    """Weights & Biases as CleanRL's --track: the W&B run mirrors the TensorBoard scalars, holds the args
    as its config and gets the evaluation videos; a resume continues the same W&B run. Any W&B failure
    is one warning line: training goes on."""

    def __init__(self, args: Args, run_dir: Path, resume: Optional[dict]):
        self.run = None
        try:
            import wandb  # only with --track

            self.wandb = wandb
            self.run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_dir.name,
                                  id=(resume or {}).get("wandb_id"), resume="allow", config=dataclasses.asdict(args),
                                  sync_tensorboard=True, dir=str(run_dir))
        except Exception as e:
            warn(f"W&B tracking could not start ({first_line(e)}); going on with TensorBoard alone.")

    def call(self, what: str, action) -> None:
        try:
            if self.run is not None:
                action()
        except Exception as e:
            warn(f"W&B could not {what} ({first_line(e)}).")


GATHER_EVERY = 8  # under torchrun: iterations between agreements on the finished games and the stop flag


class RunLog:
    """The run around the learning loop: `with RunLog(...) as run:` writes args.json and provenance.json,
    opens TensorBoard (and W&B with --track) on rank 0 and turns SIGINT/SIGTERM into a request to stop.
    The loop calls log_iteration(), evaluate() and save_checkpoint() when due, and finish() at the end."""

    def __init__(self, args: Args, run_dir: Path, resume: Optional[dict], agent: nn.Module,
                 optimizer: torch.optim.Optimizer, num_actions: int, evaluate, procs: Processes = Processes()):
        self.args, self.run_dir, self.resume, self.play_games, self.procs = args, run_dir, resume, evaluate, procs
        self.agent, self.optimizer, self.num_actions = agent, optimizer, num_actions
        self.num_iterations = args.total_timesteps // (args.num_envs * args.num_steps)
        self.first_iteration = 1 if resume is None else resume["iteration"] + 1
        self.start_step = 0 if resume is None else resume["global_step"]
        self.recent_returns: list[float] = []  # the last 100 games' scores
        self.pending: list[tuple[float, int]] = []  # this process's finished games not yet gathered
        self.episodes, self.checkpoint, self.saved_iteration = 0, None, None
        self.last_eval: Optional[tuple[int, np.ndarray]] = None  # (global step, scores), on rank 0
        self.last_eval_step: Optional[int] = None  # the same step on every process
        self.best_eval = None  # the best evaluation's figures (on rank 0; a resume's: surviving_best())
        self.signal, self.stopped, self.handlers = None, False, {}  # stopped: by a signal to any process

    def __enter__(self) -> "RunLog":
        self.tracking, self.writer = None, None  # rank 0 alone writes the run folder
        self.provenance = provenance(self.args, self.procs)  # every process: each one's machine is gathered
        if self.procs.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(self.args), indent=2))
            self.provenance = record_provenance(self.run_dir, self.provenance, resumed=self.resume is not None)
            self.best_eval = surviving_best(self.run_dir, self.resume)
            self.tracking = Tracking(self.args, self.run_dir, self.resume) if self.args.track else None  # first
            # On resume, TensorBoard hides what the first run logged after the checkpoint.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.start_step + 1 if self.resume else None)
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
                f"|{k}|{v}|" for k, v in dataclasses.asdict(self.args).items()))
            self.writer.add_text("provenance", f"```\n{json.dumps(self.provenance, indent=2)}\n```")
        if threading.current_thread() is threading.main_thread():  # the only thread that can catch signals
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.handlers[sig] = signal.signal(sig, lambda signum, _frame: setattr(self, "signal", signum))
        self.start_time = self.last_print = time.time()
        self.window = (self.start_time, self.start_step)  # (time, step) of the last progress line
        self.warm = None  # (time, step) at the end of the second iteration: compilation, autotuning are behind
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        if self.writer is not None:
            self.writer.close()
        if self.tracking is not None:
            self.tracking.call("finish the run", lambda: self.tracking.run.finish())

    def sps(self, global_step: int, since: Optional[tuple[float, int]] = None) -> float:
        """Agent steps per second since the run's start (or `since`, a (time, step) pair)."""
        start_time, start_step = since or (self.start_time, self.start_step)
        return (global_step - start_step) / max(time.time() - start_time, 1e-9)

    def log_iteration(self, iteration: int, global_step: int, games: list[tuple[float, int]], learning_rate: float,
                      figures: dict[str, float]) -> None:
        """Every process calls it: rank 0 gathers every process's finished games (under torchrun every
        GATHER_EVERY iterations and at the last), writes them and the figures to TensorBoard and prints
        a progress line every --log-interval seconds. A non-finite loss or gradient norm (the same on
        every process) raises Diverged before anything is saved from that update."""
        for name, what in [("loss", "the loss"), ("grad_norm", "the gradient norm before clipping")]:
            if not np.isfinite(figures[name]):
                latest = self.run_dir / "checkpoints" / "latest.pt"
                kept = f"{str(latest)!r} is the last finite checkpoint" if latest.is_file() else "no checkpoint exists"
                raise Diverged(f"iteration {iteration} (step {global_step:,}) made {what} {figures[name]}; nothing "
                               f"from it on was saved and {kept}: go on with --resume {self.run_dir} and, say, a "
                               "lower --learning-rate.")
        self.pending += games
        games = []
        if self.procs.world_size == 1 or iteration % GATHER_EVERY == 0 or iteration == self.num_iterations:
            games, self.pending = [game for share in all_gather(self.pending, self.procs) for game in share], []
        if not self.procs.main:
            return
        for score, length in games:
            self.writer.add_scalar("charts/episodic_return", score, global_step)
            self.writer.add_scalar("charts/episodic_length", length, global_step)
        self.episodes += len(games)
        self.recent_returns = (self.recent_returns + [score for score, _ in games])[-100:]
        for name, value in {"charts/learning_rate": learning_rate, **{f"losses/{k}": v for k, v in figures.items()},
                            "charts/SPS": self.sps(global_step)}.items():
            self.writer.add_scalar(name, value, global_step)
        now = time.time()
        if iteration == self.first_iteration + 1:
            self.warm = (now, global_step)
        if now - self.last_print >= self.args.log_interval or iteration == self.num_iterations:
            recent_sps = self.sps(global_step, self.window)  # the last window's, not the start-up's
            self.last_print, self.window = now, (now, global_step)
            print(progress_line(global_step, self.args.total_timesteps, recent_sps, now - self.start_time,
                                self.recent_returns), flush=True)

    def stop_requested(self, iteration: int) -> bool:
        """Every process calls it: True at the same iteration on all of them once SIGINT/SIGTERM
        reached any one (finish() then writes the checkpoint); under torchrun they agree every
        GATHER_EVERY iterations, so a signal stops the run within that many."""
        if self.procs.world_size > 1:
            if iteration % GATHER_EVERY and iteration != self.num_iterations:
                return False
            flag = torch.tensor(float(self.signal is not None), device=next(self.agent.parameters()).device)
            self.stopped = bool(sum_over_processes(flag).item())
        else:
            self.stopped = self.signal is not None
        if self.stopped and self.procs.main:
            print(f"signal {self.signal or '(to another process)'} received: saving a checkpoint and stopping",
                  flush=True)
        return self.stopped

    def evaluate(self, global_step: int) -> bool:
        """Every process calls it: rank 0 plays --eval-episodes whole games and logs their mean and
        spread (and video); all return whether the mean beats every earlier evaluation's (then the
        loop keeps the agent as best.pt)."""
        self.last_eval_step = global_step
        improved = torch.tensor(float(self.procs.main and self._evaluate(global_step)))
        return bool(sum_over_processes(improved.to(next(self.agent.parameters()).device)).item())

    def _evaluate(self, global_step: int) -> bool:
        started = time.time()
        video = self.run_dir / "videos" / f"eval_{global_step}.mp4" if self.args.capture_video else None
        scores = self.play_games(seed=self.args.seed + 100_000 + global_step, video=video)
        self.writer.add_scalar("eval/return_mean", scores.mean(), global_step)
        self.writer.add_scalar("eval/return_std", scores.std(), global_step)
        if video is not None and video.exists() and self.tracking is not None:
            self.tracking.call(f"take the video {str(video)!r}", lambda: self.tracking.run.log(
                {"eval/video": self.tracking.wandb.Video(str(video), format="mp4")}, commit=False))
        self.last_eval = (global_step, scores)
        improved = self.best_eval is None or scores.mean() > self.best_eval["mean"]
        if improved:
            self.best_eval = {"mean": float(scores.mean()), "std": float(scores.std()), "games": len(scores),
                              "global_step": global_step}
        self.writer.add_scalar("eval/best_return", self.best_eval["mean"], global_step)
        print(f"eval at step {global_step:,}: {scores.mean():.1f} +- {scores.std():.1f} over {len(scores)} games "
              f"({time.time() - started:.1f}s){', the best so far' if improved else ''}", flush=True)
        return improved

    def save_checkpoint(self, iteration: int, global_step: int, keep: int = 0, best: bool = False) -> None:
        """Every process calls it: each one's RNG state is gathered; rank 0 writes everything a resume
        or a playback needs (and with `best`, points best.pt at it)."""
        if self.saved_iteration == iteration and not best:
            return  # written at this iteration already (a new best just before the run's end)
        self.saved_iteration = iteration
        rngs = all_gather(rng_state(next(self.agent.parameters()).device), self.procs)
        if not self.procs.main:
            return
        state = {"script": SCRIPT, "args": dataclasses.asdict(self.args), "iteration": iteration,
                 "global_step": global_step, "num_actions": self.num_actions, "model": self.agent.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "rng": rngs[0], "rng_by_rank": rngs,
                 "best_eval": self.best_eval, "provenance": self.provenance}
        if self.tracking is not None and self.tracking.run is not None:
            state["wandb_id"] = self.tracking.run.id
        self.checkpoint = write_checkpoint(self.run_dir, state, keep, best)

    def finish(self, iteration: int, global_step: int) -> dict:
        """Evaluate once more unless just done (or stopped by a signal), write the final checkpoint
        (none if no iteration ran) and return train()'s figures."""
        sps, elapsed = self.sps(global_step), time.time() - self.start_time  # training's, before the evaluation
        warm_sps = self.sps(global_step, self.warm) if self.warm and global_step > self.warm[1] else float("nan")
        ran = iteration >= self.first_iteration
        evaluated = self.last_eval_step == global_step  # known to every process: evaluate() is collective
        improved = ran and self.args.eval_every and not self.stopped and not evaluated and self.evaluate(global_step)
        if ran:
            self.save_checkpoint(iteration, global_step, best=improved)
        if self.procs.world_size > 1:
            dist.barrier()  # leave together: a process tearing down while rank 0 still writes can abort
        scores = self.last_eval[1] if self.last_eval is not None else np.array([np.nan])
        if self.procs.main and self.checkpoint is not None:
            print(self.closing_line(global_step, scores), flush=True)
        return {"global_step": global_step, "iteration": iteration, "episodes": self.episodes,
                "sps": sps, "sps_after_warmup": warm_sps, "elapsed": elapsed,
                "mean_return": float(np.mean(self.recent_returns)) if self.recent_returns else float("nan"),
                "eval_return_mean": float(scores.mean()), "eval_return_std": float(scores.std()),
                "run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "interrupted": self.stopped}

    def closing_line(self, global_step: int, scores: np.ndarray) -> str:
        """What the run wrote and where, and the commands that go on from it."""
        best = self.run_dir / "checkpoints" / "best.pt"
        argv = [a for k, a in enumerate(sys.argv[1:]) if not (a.startswith("--resume") or sys.argv[k] == "--resume")]
        parts = [f"{'stopped' if self.stopped else 'finished'} at step {global_step:,}: {self.checkpoint}"]
        if best.is_file() and self.best_eval is not None:
            parts.append(f"best.pt {self.best_eval['mean']:.1f} at step {self.best_eval['global_step']:,}")
        if np.isfinite(scores).all():
            parts.append(f"last evaluation {scores.mean():.1f} +- {scores.std():.1f}")
        agent = best if best.is_file() else self.run_dir
        commands = [f"resume: python {SCRIPT}.py {shlex.join([*argv, '--resume', str(self.run_dir)])}",
                    f"play: python sample.py {self.run_dir}",
                    f"share: python sample.py {agent} --hub-folder {self.run_dir / 'hub'}"]
        return "; ".join(parts) + " | " + " | ".join(commands)


def main() -> None:
    args = tyro.cli(Args)
    try:
        train(args)
    except (UsageError, CheckpointError, Diverged) as e:
        sys.exit(f"error: {e}")
    finally:
        distributed = dist.is_initialized()
        if distributed:
            dist.destroy_process_group()
    if distributed:  # a finished run under torchrun: everything is written and closed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip the teardown, which gloo's threads can abort (pytorch/pytorch#179291)


if __name__ == "__main__":
    main()
