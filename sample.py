"""Play back a checkpoint of ppo_atari.py, a2c_atari.py or a2c_lstm_atari.py: scores, frames, video.

    python sample.py runs/<run>/checkpoints/latest.pt --episodes 10
    python sample.py runs/<run> --greedy --save-video videos/ --json scores.json

The checkpoint is loaded with `torch.load(weights_only=True)` (a file that would run code is
refused); it names the script and arguments that made it, and that script is imported from this
folder to rebuild the agent. Games are played with the evaluation protocol: whole games (no
episodic life), raw scores (no reward clipping), random no-op starts, the training run's frame
skip and frame stack, sticky actions only if asked; where training pressed FIRE after each lost
life (episodic life), so does playback (--no-fire-after-life-loss turns it off). Each game's score
and length are printed, then mean, std, min and max.

    python sample.py runs/<run>/checkpoints/best.pt --episodes 30 --hub-folder hub/ --push-to-hub me/ppo-Breakout

--hub-folder writes a Hugging Face Hub model folder (checkpoint, one game's video, args, results,
and a model card that says only what this playback measured); --push-to-hub uploads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

HERE = Path(__file__).resolve().parent
SCRIPTS = ("ppo_atari", "a2c_atari", "a2c_lstm_atari")


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]
    """checkpoint file, or a run folder (meaning its latest checkpoint)"""
    episodes: int = 10
    """number of whole games to play"""
    greedy: bool = False
    """take the most likely action instead of sampling from the policy"""
    seed: int = 1
    """seed of the games and of action sampling"""
    num_envs: int = 1
    """games played at once (each plays a fixed share of --episodes, so short games are not favoured)"""
    env_id: Optional[str] = None
    """play another game than the checkpoint's (its action space must match)"""
    env_backend: Literal["auto", "envpool", "ale"] = "auto"
    """emulator backend (auto: envpool where it imports)"""
    sticky_actions: float = 0.0
    """probability of repeating the previous action (Machado et al. 2018 use 0.25)"""
    noop_max: int = 30
    """random no-op actions (up to this many) at the start of every game"""
    max_episode_frames: int = 108_000
    """end a game after this many emulator frames (108,000 = 30 minutes)"""
    save_video: Optional[str] = None
    """folder for one MP4 video per game, full colour at the game's frame rate"""
    save_frames: Optional[str] = None
    """folder for every agent step's full-colour frame as PNG, one sub-folder per game"""
    json: Optional[str] = None
    """write the scores as JSON to this file"""
    fire_after_life_loss: bool = True
    """press FIRE on the step after a lost life where the run trained with episodic life (its agent
    never had to: training pressed it), so a greedy agent cannot stall the game"""
    cuda: bool = True
    """use CUDA when it is available"""
    hub_folder: Optional[str] = None
    """write a Hugging Face Hub model folder here: the checkpoint, a video of game 1, args.json,
    results.json and a README.md model card with these games' mean and std"""
    push_to_hub: Optional[str] = None
    """USER/REPO: upload --hub-folder to the Hub (needs huggingface_hub and a login); nothing is
    uploaded without this flag"""


class SampleError(Exception):
    """Bad input, reported as one sentence."""


def resolve_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "latest.pt", p / "latest.pt"):
            if candidate.is_file():
                return candidate
        raise SampleError(f"{path!r} is a folder without checkpoints/latest.pt.")
    if not p.is_file():
        raise SampleError(f"checkpoint {path!r} does not exist.")
    return p


def load(path: str) -> tuple[dict, object, Path]:
    """(checkpoint dict, the script module that wrote it, resolved path); never runs code from the file."""
    p = resolve_path(path)
    if p.stat().st_size == 0:
        raise SampleError(f"{str(p)!r} is empty.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text and ("GLOBAL" in text or "Unsupported" in text):
            raise SampleError(
                f"{str(p)!r} holds pickled objects that could run code; refused without loading them."
            ) from None
        reason = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
        raise SampleError(f"{str(p)!r} is not a loadable checkpoint ({reason}).") from None
    if not isinstance(state, dict) or not {"script", "args", "model", "num_actions"} <= state.keys():
        raise SampleError(f"{str(p)!r} is not a checkpoint written by these scripts.")
    script = state["script"]
    if script not in SCRIPTS or not (HERE / f"{script}.py").is_file():
        raise SampleError(f"{str(p)!r} was written by {script}.py, which is not in {str(HERE)!r}.")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return state, importlib.import_module(script), p


def check_script(state: dict, module) -> None:
    """Print the hash of the script that trained the checkpoint; warn when the one imported here differs."""
    trained_with = (state.get("provenance") or {}).get("script_sha256")
    here = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    if trained_with is None:
        print(f"{state['script']}.py: the checkpoint records no script hash (written before provenance)", flush=True)
    elif trained_with == here:
        print(f"{state['script']}.py sha256 {here[:12]}, the script that trained this checkpoint", flush=True)
    else:
        print(
            f"warning: the checkpoint was trained by {state['script']}.py sha256 {trained_with[:12]}, but the one "
            f"here is {here[:12]}: it plays with this file's code",
            file=sys.stderr,
            flush=True,
        )


def write_frames(folder: Path, frames: list) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{t:05d}.png")


def check_args(args: Args) -> None:
    for name in ("episodes", "num_envs", "max_episode_frames"):
        if getattr(args, name) <= 0:
            raise SampleError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if args.noop_max < 0:
        raise SampleError(f"--noop-max must not be negative, got {args.noop_max}.")
    if not 0.0 <= args.sticky_actions <= 1.0:
        raise SampleError(f"--sticky-actions must lie in [0, 1], got {args.sticky_actions}.")
    if args.push_to_hub is not None:
        if args.hub_folder is None:
            raise SampleError("--push-to-hub uploads the folder that --hub-folder writes, so it needs --hub-folder.")
        if len(args.push_to_hub.split("/")) != 2 or not all(args.push_to_hub.split("/")):
            raise SampleError(f"--push-to-hub takes USER/REPO, got {args.push_to_hub!r}.")
        hub_client()  # no library or no login: said now, before any game is played


def hub_client():
    """huggingface_hub's HfApi, imported only for --push-to-hub; a missing library or login is one sentence."""
    try:
        import huggingface_hub
    except ImportError:
        raise SampleError("--push-to-hub needs huggingface_hub: pip install huggingface_hub.") from None
    if huggingface_hub.get_token() is None:
        raise SampleError("--push-to-hub needs a Hugging Face login: run `hf auth login` or set HF_TOKEN.")
    return huggingface_hub.HfApi()


def play(args: Args) -> dict:
    check_args(args)
    state, module, path = load(args.checkpoint)
    saved = state["args"]
    check_script(state, module)
    env_id = args.env_id or saved["env_id"]
    try:
        game = module.atari_game(env_id)
        backend = module.resolve_backend(args.env_backend)
    except module.UsageError as e:
        raise SampleError(str(e)) from None
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    if args.hub_folder is not None and args.save_video is None:  # the card's video: game 1's
        args = dataclasses.replace(args, save_video=str(Path(args.hub_folder) / "videos"))
    num_envs = min(args.num_envs, args.episodes)
    env_kwargs = dict(
        frame_skip=saved["frame_skip"],
        noop_max=args.noop_max,
        sticky_actions=args.sticky_actions,
        full_action_space=saved["full_action_space"],
        max_episode_frames=args.max_episode_frames,
    )
    envs = module.AtariEnvs(game, backend, num_envs, args.seed, **env_kwargs)
    # A twin emulator, same seed and actions, renders the full-colour screen for videos and frames.
    screens = (
        module.AtariEnvs(game, backend, num_envs, args.seed, full_frames=True, **env_kwargs)
        if args.save_video or args.save_frames
        else None
    )
    try:
        if envs.num_actions != state["num_actions"]:
            raise SampleError(
                f"{env_id} has {envs.num_actions} actions but the agent was trained with "
                f"{state['num_actions']} ({saved['env_id']})."
            )
        # a checkpoint older than a network flag was made with the value NETWORK_ARGS names
        net = {k: v for k, v in module.NETWORK_ARGS.items() if v is not None} | saved
        extra = {}
        if "lstm_hidden_size" in net:  # the LSTM's network
            extra = dict(
                lstm_hidden_size=net["lstm_hidden_size"], layer_norm=net["lstm_layer_norm"], skip=net["lstm_skip"]
            )
        agent = module.Agent(state["num_actions"], saved["frame_stack"], **extra).to(device)
        agent = agent.to(memory_format=torch.channels_last)  # as training holds it: faster convolutions
        agent.load_state_dict(state["model"])
        agent.eval()
        result = play_games(args, module, agent, envs, screens, saved, device)
    finally:
        envs.close()
        if screens is not None:
            screens.close()

    returns = np.array([e["return"] for e in result])
    summary = {
        "checkpoint": str(path),
        "script": state["script"],
        "env_id": env_id,
        "trained_steps": state.get("global_step"),
        "greedy": args.greedy,
        "sticky_actions": args.sticky_actions,
        "seed": args.seed,
        "episodes": result,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(np.mean([e["length"] for e in result])),
    }
    print(
        f"{len(returns)} games of {env_id}: mean {summary['mean_return']:.1f} +- {summary['std_return']:.1f}, "
        f"min {summary['min_return']:.1f}, max {summary['max_return']:.1f}",
        flush=True,
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.hub_folder is not None:
        try:
            write_hub_folder(Path(args.hub_folder), args, module, state, path, summary)
        except OSError as e:
            raise SampleError(f"could not write the model folder {args.hub_folder!r} ({e}).") from None
        if args.push_to_hub is not None:
            api = hub_client()
            try:
                api.create_repo(args.push_to_hub, exist_ok=True)
                url = api.upload_folder(
                    folder_path=args.hub_folder,
                    repo_id=args.push_to_hub,
                    commit_message=f"{state['script']} on {env_id}: {len(returns)} games",
                )
            except Exception as e:  # network, permission, quota: the folder stays, the error is one sentence
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise SampleError(
                    f"could not upload {args.hub_folder!r} to {args.push_to_hub} ({reason}); "
                    "the folder is complete and can be uploaded again."
                ) from None
            print(f"uploaded {args.hub_folder} to {url}", flush=True)
    return summary


ALGORITHMS = {
    "ppo_atari": ("PPO", "ppo"),
    "a2c_atari": ("A2C", "a2c"),
    "a2c_lstm_atari": ("A2C with an LSTM", "a2c-lstm"),
}


def command_line(module, saved: dict) -> str:
    """The training command: the flags whose values differ from the script's defaults."""
    defaults, flags = dataclasses.asdict(module.Args()), []
    for key, value in saved.items():
        if key not in defaults or value == defaults[key] or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join([f"python {module.SCRIPT}.py", *flags])


def write_hub_folder(folder: Path, args: Args, module, state: dict, path: Path, summary: dict) -> None:
    """The checkpoint, game 1's video, the training args, results.json and a README.md model card whose
    metadata (model-index) holds the mean and std just measured."""
    folder.mkdir(parents=True, exist_ok=True)
    script, saved, env_id = state["script"], state["args"], summary["env_id"]
    shutil.copyfile(path, folder / f"{script}.pt")
    video = summary["episodes"][0].get("video")
    if video:
        shutil.copyfile(video, folder / "replay.mp4")
    if args.save_video == str(folder / "videos"):  # made for the card alone: game 1's is replay.mp4
        shutil.rmtree(folder / "videos", ignore_errors=True)
    (folder / "args.json").write_text(json.dumps(saved, indent=2))
    results = {k: v for k, v in summary.items() if k not in ("checkpoint",)}
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    name, tag = ALGORITHMS[script]
    mean, std, games = summary["mean_return"], summary["std_return"], len(summary["episodes"])
    steps = state.get("global_step", 0)
    protocol = (
        f"{games} whole games (no episodic life, raw scores, up to {args.noop_max} random no-ops first), "
        f"{'greedy' if args.greedy else 'sampled'} actions, sticky actions "
        f"{args.sticky_actions if args.sticky_actions else 'off'}, at most {args.max_episode_frames:,} frames "
        f"a game, seed {args.seed}"
    )
    card = f"""---
library_name: pytorch
tags:
- reinforcement-learning
- deep-reinforcement-learning
- atari
- {env_id}
- {tag}
model-index:
- name: {script}
  results:
  - task:
      type: reinforcement-learning
      name: reinforcement-learning
    dataset:
      name: {env_id}
      type: {env_id}
    metrics:
    - type: mean_reward
      value: {mean:.2f} +/- {std:.2f}
      name: mean_reward
      verified: false
---

# {name} playing {env_id}

{"An" if name[0] in "AEIOU" else "A"} {name} agent trained with `{script}.py`, one file of the single-file
Atari scripts, for {steps:,} agent steps ({steps * saved["frame_skip"]:,} frames).
It scores **{mean:.2f} +/- {std:.2f}** over {games} games, as played back by `sample.py`: {protocol}.

## Training

    {command_line(module, saved)}

(every flag of the run is in `args.json`; the checkpoint is `{script}.pt`)

## Play it back

    python sample.py {script}.pt --episodes {games}{" --greedy" if args.greedy else ""} --save-video videos/

`sample.py` needs `{script}.py` beside it; the checkpoint loads with `torch.load(..., weights_only=True)`.
Per-game scores and lengths are in `results.json`{"; `replay.mp4` is game 1" if video else ""}.
"""
    (folder / "README.md").write_text(card)
    print(f"model folder for the Hub: {folder}", flush=True)


@torch.no_grad()
def play_games(args: Args, module, agent, envs, screens, saved: dict, device) -> list[dict]:
    num_envs = envs.num_envs
    quota = np.full(num_envs, args.episodes // num_envs)
    quota[: args.episodes % num_envs] += 1
    frame_stack = module.FrameStack(num_envs, saved["frame_stack"], device)
    frames, lives = envs.reset()
    frame_stack.push(torch.from_numpy(frames).to(device), torch.ones(num_envs, dtype=torch.bool, device=device))
    stats = module.EpisodeStats(num_envs, lives)
    fire = envs.fire_action if args.fire_after_life_loss and saved.get("episodic_life", False) else None
    recurrent = hasattr(agent, "initial_state")
    if recurrent:
        hidden = agent.initial_state(num_envs, device)
        starts = torch.ones(num_envs, dtype=torch.bool, device=device)
    screen_frames = [[f] for f in screens.reset()[0]] if screens is not None else None
    fps = 60.0 / saved["frame_skip"]  # one frame per agent step at the emulator's 60 Hz
    played = np.zeros(num_envs, np.int64)
    episodes: list[dict] = []
    start = time.time()
    while (played < quota).any():
        if recurrent:
            logits, _, hidden = agent.step(frame_stack.obs, hidden, starts)
        else:
            logits, _ = agent(frame_stack.obs)
        if args.greedy:
            actions = logits.argmax(-1)
        else:
            actions = torch.distributions.Categorical(logits=logits, validate_args=False).sample()
        actions = actions.cpu().numpy()
        if fire is not None:
            actions = np.where(stats.life_lost, fire, actions)
        resetting = stats.ended.copy()
        frames, raw_rewards, terminated, truncated, lives = envs.step(actions)
        _, life_lost, returns, lengths = stats.update(raw_rewards, terminated, truncated, lives)
        if screens is not None:
            for i, screen in enumerate(screens.step(actions)[0]):
                if played[i] < quota[i]:  # envs done with their share keep no frames
                    screen_frames[i] = [screen] if resetting[i] else screen_frames[i] + [screen]
        for i, score, length in zip(np.flatnonzero(stats.ended), returns, lengths):
            if played[i] < quota[i]:
                k = len(episodes)
                episodes.append(
                    {
                        "return": float(score),
                        "length": int(length),
                        "env": int(i),
                        "truncated": bool(truncated[i] and not terminated[i]),
                    }
                )
                saved_to = []
                if args.save_video:
                    Path(args.save_video).mkdir(parents=True, exist_ok=True)
                    # MP4 through the ffmpeg binary that imageio-ffmpeg ships: no system ffmpeg needed
                    video = module.write_video(Path(args.save_video) / f"episode_{k:03d}.mp4", screen_frames[i], fps)
                    episodes[-1]["video"] = str(video) if video else None
                    saved_to += [str(video)] if video else []
                if args.save_frames:
                    folder = Path(args.save_frames) / f"episode_{k:03d}"
                    write_frames(folder, screen_frames[i])
                    episodes[-1]["frames"] = str(folder)
                    saved_to.append(str(folder))
                print(
                    f"game {k + 1}/{args.episodes}: score {score:.1f}, {length} steps"
                    f"{' -> ' + ', '.join(saved_to) if saved_to else ''} ({time.time() - start:.0f}s)",
                    flush=True,
                )
            played[i] += 1
        frame_stack.push(torch.from_numpy(frames).to(device), torch.from_numpy(resetting).to(device))
        if recurrent:  # zero the LSTM state where an episode starts, as in training
            starts = torch.from_numpy(resetting | (life_lost & saved.get("reset_on_life_loss", False))).to(device)
    return episodes


def main() -> None:
    args = tyro.cli(Args)
    try:
        play(args)
    except SampleError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
