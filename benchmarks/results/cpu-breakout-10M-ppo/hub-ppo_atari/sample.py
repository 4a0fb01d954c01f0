"""Play back a checkpoint of ppo_atari.py, a2c_atari.py, a2c_lstm_atari.py or a copy: scores, frames, video.

    python sample.py runs/<run>/checkpoints/latest.pt --episodes 10
    python sample.py runs/<run> --greedy --save-video videos/ --json scores.json

The checkpoint is loaded with `torch.load(weights_only=True)` (a file that would run code is
refused); it names the script and arguments that made it, and the script that last wrote it is
imported to rebuild the agent: `<script>.py` beside sample.py or in the checkpoint's folders whose
sha256 is the one the checkpoint's provenance records (a copied script is its own experiment), else
any script beside sample.py with that sha256, else `<script>.py` by name alone (with a warning).
Weights that do not fit that script's network are one sentence naming the first that differs.
Games are played with the evaluation protocol: whole games (no episodic life), raw scores (no reward
clipping), random no-op starts, the training run's frame skip and frame stack, sticky actions only
if asked; where training pressed FIRE after each lost life (episodic life), so does playback
(--no-fire-after-life-loss turns it off). Each game's score and length are printed (with its video's
length and the wall time it took), then mean, std, min and max.

    python sample.py runs/<run>/checkpoints/best.pt --episodes 30 --hub-folder hub/ --push-to-hub me/ppo-Breakout

--hub-folder writes a Hugging Face Hub model folder that plays back on its own: the checkpoint (weights,
args, provenance, best evaluation; no optimizer or random state), the training script and sample.py,
one game's video, args, results, and a model card that says only what this playback measured;
--push-to-hub uploads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

HERE = Path(__file__).resolve().parent


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


def load(path: str) -> tuple[dict, object, Path, Path]:
    """(checkpoint dict, the script module that wrote it, resolved path, the script's file); never runs
    code from the checkpoint."""
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
    if not isinstance(state["script"], str) or not state["script"].isidentifier():
        raise SampleError(f"{str(p)!r} is not a checkpoint written by these scripts.")
    script = find_script(state, p)
    return state, import_script(script), p, script


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trained_sha256(state: dict, path: Path) -> Optional[str]:
    """The sha256 of the script that last wrote the checkpoint: the code of its provenance's last resume (a
    resume records only what differs from the run's start), else the start's; from the run's provenance.json
    where the checkpoint holds none. None where nothing is recorded."""
    record = state.get("provenance")
    if not isinstance(record, dict):
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        try:
            record = json.loads((run_dir / "provenance.json").read_text())
        except (OSError, ValueError):
            return None
    if not isinstance(record, dict):
        return None
    resumes = record.get("resumes") if isinstance(record.get("resumes"), list) else []
    last = (resumes[-1].get("changed") or {}) if resumes and isinstance(resumes[-1], dict) else {}
    return last.get("script_sha256") or record.get("script_sha256")


def find_script(state: dict, path: Path) -> Path:
    """The script that wrote the checkpoint: by name (beside sample.py, then in the checkpoint's folders) with
    the recorded sha256; else any script beside sample.py with that sha256; else by name alone."""
    name, trained = state["script"], trained_sha256(state, path)
    folders = list(dict.fromkeys([HERE, *path.resolve().parents]))
    by_name = [folder / f"{name}.py" for folder in folders if (folder / f"{name}.py").is_file()]
    if trained is not None:
        beside = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
        for candidate in by_name + beside:
            if sha256(candidate) == trained:
                return candidate
    if by_name:
        return by_name[0]
    recorded = f" (sha256 {trained[:12]})" if trained else ""
    raise SampleError(
        f"{str(path)!r} was written by {name}.py{recorded}, which is not in {str(HERE)!r} beside sample.py nor "
        f"in the checkpoint's folders{', and no script beside sample.py has that sha256' if trained else ''}."
    )


def import_script(path: Path):
    """The script at `path` as a module: the one already imported from that file, else loaded from it (under
    its own name where that is free)."""
    path, key = path.resolve(), path.stem
    loaded = sys.modules.get(key)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", None) or "").resolve() == path:
            return loaded
        key = f"{path.stem}_sha256_{sha256(path)[:16]}"  # the name is taken by another file
        if key in sys.modules:
            return sys.modules[key]  # a file with the same bytes
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # before it runs: its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[key]
        raise SampleError(f"{str(path)!r} does not import ({type(e).__name__}: {str(e)[:160]}).") from None
    return module


def check_script(state: dict, script: Path, trained: Optional[str]) -> None:
    """Print the hash of the script that last wrote the checkpoint; warn when the one imported here differs."""
    here = sha256(script)
    if trained is None:
        print(f"{script.name}: the checkpoint records no script hash (written before provenance)", flush=True)
    elif trained == here:
        print(f"{script.name} sha256 {here[:12]}, the script that last wrote this checkpoint", flush=True)
    else:
        print(
            f"warning: the checkpoint was last written by {state['script']}.py sha256 {trained[:12]}, but "
            f"{script.name} here is {here[:12]}: it plays with this file's code",
            file=sys.stderr,
            flush=True,
        )


def build_agent(module, state: dict):
    """The script's Agent with the checkpoint's network flags (a checkpoint older than a flag: the value
    NETWORK_ARGS names), each passed as the Agent's parameter of that name (without the `lstm_` prefix)."""
    net = {k: v for k, v in module.NETWORK_ARGS.items() if v is not None} | state["args"]
    params = inspect.signature(module.Agent).parameters
    kwargs = {}
    for name in module.NETWORK_ARGS:
        param = name if name in params else name.removeprefix("lstm_")
        if param in params and name in net:
            kwargs[param] = net[name]
    return module.Agent(state["num_actions"], **kwargs)


def load_weights(agent, weights: dict, script: Path) -> None:
    """load_state_dict, or one sentence naming the first tensor that does not fit the script's network."""
    own = agent.state_dict()
    for key, value in weights.items():
        if key not in own:
            raise SampleError(
                f"the checkpoint's {key} is not in {script.name}'s network: it was trained with another network "
                "than this script builds."
            )
        if tuple(own[key].shape) != tuple(value.shape):
            raise SampleError(
                f"the checkpoint's {key} has shape {tuple(value.shape)} but {script.name}'s network has "
                f"{tuple(own[key].shape)}: it was trained with another network than this script builds."
            )
    missing = [key for key in own if key not in weights]
    if missing:
        raise SampleError(
            f"the checkpoint has no {missing[0]}, which {script.name}'s network holds: it was trained with another "
            "network than this script builds."
        )
    agent.load_state_dict(weights)


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
    state, module, path, script = load(args.checkpoint)
    saved, trained = state["args"], trained_sha256(state, path)
    check_script(state, script, trained)
    env_id = args.env_id or saved["env_id"]
    try:
        game = module.atari_game(env_id)
        backend = module.resolve_backend(args.env_backend)
    except module.UsageError as e:
        raise SampleError(str(e)) from None
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    aside = None
    if args.hub_folder is not None and args.save_video is None:  # the card's video, made aside: no folder is touched
        aside = tempfile.mkdtemp(prefix="sample-video-")
        args = dataclasses.replace(args, save_video=aside)
    try:
        summary, card_video = play_and_summarise(
            args, module, state, path, game, backend, env_id, device, card_video_only=aside is not None
        )
        if aside is not None:  # the videos were made for the card alone: game 1's is its replay.mp4
            for episode in summary["episodes"]:
                episode.pop("video", None)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summary, indent=2))
        if args.hub_folder is not None:
            try:
                write_hub_folder(Path(args.hub_folder), args, module, script, trained, state, summary, card_video)
            except OSError as e:
                raise SampleError(f"could not write the model folder {args.hub_folder!r} ({e}).") from None
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    if args.push_to_hub is not None:
        api = hub_client()
        try:
            api.create_repo(args.push_to_hub, exist_ok=True)
            url = api.upload_folder(
                folder_path=args.hub_folder,
                repo_id=args.push_to_hub,
                commit_message=f"{state['script']} on {env_id}: {len(summary['episodes'])} games",
            )
        except Exception as e:  # network, permission, quota: the folder stays, the error is one sentence
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SampleError(
                f"could not upload {args.hub_folder!r} to {args.push_to_hub} ({reason}); "
                "the folder is complete and can be uploaded again."
            ) from None
        print(f"uploaded {args.hub_folder} to {url}", flush=True)
    return summary


def play_and_summarise(
    args: Args, module, state: dict, path: Path, game: str, backend: str, env_id: str, device, card_video_only: bool
):
    """Play the games; (the summary of scores, game 1's video or None)."""
    saved = state["args"]
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
        script = Path(module.__file__)
        agent = build_agent(module, state).to(device)
        agent = agent.to(memory_format=torch.channels_last)  # as training holds it: faster convolutions
        load_weights(agent, state["model"], script)
        agent.eval()
        fire = envs.fire_action if args.fire_after_life_loss and saved.get("episodic_life", False) else None
        result = play_games(args, module, agent, envs, screens, saved, device, fire, card_video_only)
    finally:
        envs.close()
        if screens is not None:
            screens.close()

    returns = np.array([e["return"] for e in result])
    summary = {
        "checkpoint": str(path),
        "script": state["script"],
        "played_with": {"file": script.name, "sha256": sha256(script)},
        "env_id": env_id,
        "trained_env_id": saved["env_id"],
        "trained_steps": state.get("global_step"),
        "greedy": args.greedy,
        "sticky_actions": args.sticky_actions,
        "noop_max": args.noop_max,
        "max_episode_frames": args.max_episode_frames,
        "fire_after_life_loss": fire is not None,
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
    video = result[0].get("video")
    return summary, Path(video) if video else None


ALGORITHMS = {
    "ppo_atari": ("PPO", "ppo"),
    "a2c_atari": ("A2C", "a2c"),
    "a2c_lstm_atari": ("A2C with an LSTM", "a2c-lstm"),
}


def algorithm(script: str, saved: dict) -> tuple[str, str]:
    """(name, tag) of the algorithm: by the script's name, else (a copied script) by its flags."""
    if script in ALGORITHMS:
        return ALGORITHMS[script]
    if "clip_coef" in saved:
        return ALGORITHMS["ppo_atari"]
    return ALGORITHMS["a2c_lstm_atari" if "lstm_hidden_size" in saved else "a2c_atari"]


def command_line(module, saved: dict) -> str:
    """The training command: the flags whose values differ from the script's defaults; a checkpoint older than a
    network flag was made with the value NETWORK_ARGS names, so that value is said where it is not the default."""
    defaults, flags = dataclasses.asdict(module.Args()), []
    saved = {k: v for k, v in getattr(module, "NETWORK_ARGS", {}).items() if v is not None} | saved
    for key, value in saved.items():
        if key not in defaults or value == defaults[key] or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        else:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join([f"python {Path(module.__file__).name}", *flags])


def playback_flags(args: Args) -> list[str]:
    """The flags of this playback that change what it measured (not where it writes), as sample.py takes them."""
    defaults, flags = dataclasses.asdict(Args(checkpoint="")), []
    measured = ("greedy", "seed", "num_envs", "env_id", "env_backend", "sticky_actions", "noop_max")
    for key in (*measured, "max_episode_frames", "fire_after_life_loss"):
        value, flag = getattr(args, key), "--" + key.replace("_", "-")
        if value != defaults[key]:
            flags.append((flag if value else f"--no-{flag[2:]}") if isinstance(value, bool) else f"{flag} {value}")
    return flags


CHECKPOINT_KEYS = ("script", "args", "iteration", "global_step", "num_actions", "model", "best_eval", "provenance")


def write_hub_folder(
    folder: Path, args: Args, module, script: Path, trained: Optional[str], state: dict, summary: dict, video
) -> None:
    """A folder that plays back on its own: the checkpoint as play-back needs it, the training script and
    sample.py, game 1's video, the training args, results.json and a README.md model card whose metadata
    (model-index) holds the mean and std just measured."""
    folder.mkdir(parents=True, exist_ok=True)
    name_of, saved, env_id = state["script"], state["args"], summary["env_id"]
    checkpoint = f"{name_of}.pt"
    # weights, flags and records; no optimizer or random state (a resume's, not a playback's)
    torch.save({k: state[k] for k in CHECKPOINT_KEYS if k in state}, folder / checkpoint)
    here = sha256(script)
    for source in (script, Path(__file__)):  # not onto themselves: a folder made again from its own files
        if source.resolve() != (folder / source.name).resolve():
            shutil.copyfile(source, folder / source.name)
    if video is not None:
        shutil.copyfile(video, folder / "replay.mp4")
    (folder / "args.json").write_text(json.dumps(saved, indent=2))
    results = {k: v for k, v in summary.items() if k not in ("checkpoint",)}
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    name, tag = algorithm(name_of, saved)
    mean, std, games = summary["mean_return"], summary["std_return"], len(summary["episodes"])
    steps = state.get("global_step", 0)
    fire = (
        "FIRE pressed on the step after each lost life (training's episodic life pressed it, so its agent never had to)"
        if summary["fire_after_life_loss"]
        else "no FIRE pressed for the agent"
    )
    protocol = (
        f"{games} whole games (no episodic life, raw scores, up to {args.noop_max} random no-ops first), "
        f"{'greedy' if args.greedy else 'sampled'} actions, sticky actions "
        f"{args.sticky_actions if args.sticky_actions else 'off'}, {fire}, at most {args.max_episode_frames:,} "
        f"frames a game, seed {args.seed}"
    )
    trained_on = saved["env_id"]
    another_game = (
        f"\n\n**It was trained on {trained_on} and is played here on {env_id}** (`--env-id`): these scores are on "
        f"a game it never saw in training."
        if game_of(module, env_id) != game_of(module, trained_on)
        else ""
    )
    if trained is not None and trained == here:
        code = (
            f"`{script.name}` in this folder is the script that trained it (sha256 `{here}`, as its checkpoint records)"
        )
    elif trained is not None:
        code = (
            f"The script that trained it (sha256 `{trained}`, as its checkpoint records) is not at hand; "
            f"`{script.name}` in this folder (sha256 `{here}`) is the one that played these games"
        )
    else:
        code = (
            f"The checkpoint records no script hash, so the script that trained it is not known; `{script.name}` in "
            f"this folder (sha256 `{here}`) is the one that played these games"
        )
    replay = " ".join(["python sample.py", checkpoint, f"--episodes {games}", *playback_flags(args)])
    card = f"""---
library_name: pytorch
tags:
- reinforcement-learning
- deep-reinforcement-learning
- atari
- {env_id}
- {tag}
model-index:
- name: {name_of}
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

{"An" if name[0] in "AEIOU" else "A"} {name} agent trained with `{script.name}`, one file of the single-file
Atari scripts, for {steps:,} agent steps ({steps * saved["frame_skip"]:,} frames) on {trained_on}.
It scores **{mean:.2f} +/- {std:.2f}** over {games} games, as played back by `sample.py`: {protocol}.{another_game}

## Training

    {command_line(module, saved)}

(every flag of the run is in `args.json`)

## Play it back

    {replay} --save-video videos/

{code}; `sample.py` is here too, so the folder plays back on its own (with the packages both files
import). The checkpoint `{checkpoint}` holds the weights, the training flags, the provenance and the best
evaluation (no optimizer or random state) and loads with `torch.load(..., weights_only=True)`.
Per-game scores and lengths are in `results.json`{"; `replay.mp4` is game 1" if video is not None else ""}.
"""
    (folder / "README.md").write_text(card)
    print(f"model folder for the Hub: {folder}", flush=True)


def game_of(module, env_id: str) -> str:
    """The ROM an env id plays ('Breakout-v5' and 'BreakoutNoFrameskip-v4' are one game)."""
    try:
        return module.atari_game(env_id)
    except module.UsageError:
        return env_id


@torch.no_grad()
def play_games(
    args: Args, module, agent, envs, screens, saved: dict, device, fire: Optional[int], card_video_only: bool = False
) -> list[dict]:
    """Play each env's share of --episodes; `fire`: the action pressed on the step after a lost life (None: none);
    `card_video_only`: --save-video is a scratch folder for game 1's video, the model card's replay.mp4."""
    num_envs = envs.num_envs
    quota = np.full(num_envs, args.episodes // num_envs)
    quota[: args.episodes % num_envs] += 1
    frame_stack = module.FrameStack(num_envs, saved["frame_stack"], device)
    frames, lives = envs.reset()
    frame_stack.push(torch.from_numpy(frames).to(device), torch.ones(num_envs, dtype=torch.bool, device=device))
    stats = module.EpisodeStats(num_envs, lives)
    recurrent = hasattr(agent, "initial_state")
    if recurrent:
        hidden = agent.initial_state(num_envs, device)
        starts = torch.ones(num_envs, dtype=torch.bool, device=device)
    screen_frames = [[f] for f in screens.reset()[0]] if screens is not None else None
    fps = 60.0 / saved["frame_skip"]  # one frame per agent step at the emulator's 60 Hz
    played = np.zeros(num_envs, np.int64)
    episodes: list[dict] = []
    started = np.full(num_envs, time.time())  # when each env's game began, for the wall time it took
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
                saved_to, took = [], f"played in {time.time() - started[i]:.0f} s"
                if args.save_video and (k == 0 or not card_video_only):
                    Path(args.save_video).mkdir(parents=True, exist_ok=True)
                    # MP4 through the ffmpeg binary that imageio-ffmpeg ships: no system ffmpeg needed
                    video = module.write_video(Path(args.save_video) / f"episode_{k:03d}.mp4", screen_frames[i], fps)
                    episodes[-1]["video"] = str(video) if video else None
                    if video:  # one frame per agent step and the first screen
                        saved_to.append("the model folder's replay.mp4" if card_video_only else str(video))
                        took = f"{len(screen_frames[i]) / fps:.0f} s of video, {took}"
                if args.save_frames:
                    folder = Path(args.save_frames) / f"episode_{k:03d}"
                    write_frames(folder, screen_frames[i])
                    episodes[-1]["frames"] = str(folder)
                    saved_to.append(str(folder))
                print(
                    f"game {k + 1}/{args.episodes}: score {score:.1f}, {length} steps"
                    f"{' -> ' + ', '.join(saved_to) if saved_to else ''} ({took})",
                    flush=True,
                )
            played[i] += 1
            started[i] = time.time()
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
