"""Benchmark report: a Markdown table per game and PNG learning curves, read from TensorBoard logs.

    python benchmarks/report.py --runs-dir runs/benchmark --out-dir benchmarks/report

For every run folder (as benchmarks/run.py makes them, or any run of the training scripts) it
reads charts/episodic_return and charts/SPS from the event files. Per script and game: the final
return (mean of the last 100 games of each seed), its mean and std over seeds, SPS and wall time
(a resumed run's without the time it lay stopped), next to the published references in
published_scores.json (with their sources and budgets) and, from the published learning curves,
the same algorithm's published return at the run's own budget.
A run shorter than a reference's budget is labelled with its own budget, never placed as if it
were a 10M-step result; `--at-steps 3000000` also reads every seed at 3M (a longer run's 3M
figure). Curves: return vs agent steps, mean over seeds with the min-max band,
beside the published curves of the same algorithm up to the runs' budget (a 10M-step final is
drawn as a line only for runs that reach it); the legend sits outside the axes.

With several seeds each row also gives the interquartile mean (IQM) of the seeds' finals and its
95% stratified-bootstrap interval (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021). Each run's provenance.json names the code (the script's sha256) and the
torch version that produced it (a run resumed with other code or torch names both: "a then b"): seeds
of one script made by different code or torch, or that reached different budgets, are separate rows,
said in a note, never averaged silently; the hardware line comes from the runs' records. Across games
(human-normalised), the median and mean are rliable's: over games, of each game's mean over seeds.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

HERE = Path(__file__).resolve().parent
# Which published references (by their "algorithm" field) a script's curve is drawn against.
FAMILIES = {
    "ppo_atari": ("ppo",),
    "a2c_atari": ("a2c",),
    "a2c_lstm_atari": ("a2c", "ppo-lstm"),
    "cleanrl_ppo_atari_envpool": ("ppo",),
}


@dataclass
class Args:
    runs_dir: str = "runs/benchmark"
    """folder with one sub-folder per run"""
    out_dir: str = "benchmarks/report"
    """where report.md and the PNG curves go"""
    last_episodes: int = 100
    """final return = mean of this many last games of a run"""
    hardware: Optional[str] = None
    """hardware line for the report (default: what benchmarks/run.py recorded in each run's benchmark.json)"""
    at_steps: list[int] = field(default_factory=list)
    """also read each seed's return at these agent steps (mean of the last --last-episodes games finished by
    then), beside the published curves there: the 3M figure of a longer run"""
    evaluations: list[str] = field(default_factory=list)
    """`sample.py --json` files of these runs' checkpoints: each agent's whole-game scores in a table of their own,
    beside the training return of its run at the agent's step (never mixed into the training figures)"""


def read_run(run_dir: Path) -> Optional[dict]:
    """A run's identity, returns curve, SPS and wall time, or None if it logged nothing."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    meta = {}
    recorded = run_dir / "provenance.json"
    provenance = json.loads(recorded.read_text()) if recorded.is_file() else {}
    if (run_dir / "benchmark.json").is_file():
        meta = json.loads((run_dir / "benchmark.json").read_text())
    elif (run_dir / "args.json").is_file():
        saved = json.loads((run_dir / "args.json").read_text())
        meta = {
            "script": saved.get("exp_name"),
            "env_id": saved.get("env_id"),
            "seed": saved.get("seed"),
            "total_timesteps": saved.get("total_timesteps"),
        }
    else:
        return None
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if "charts/episodic_return" not in tags:
        return None
    returns = acc.Scalars("charts/episodic_return")
    signals = {tag: acc.Scalars(tag) for tag in LATE_PHASE if tag in tags}
    lengths = acc.Scalars("charts/episodic_length") if "charts/episodic_length" in tags else []
    saved = json.loads((run_dir / "args.json").read_text()) if (run_dir / "args.json").is_file() else {}
    sps = acc.Scalars("charts/SPS") if "charts/SPS" in tags else []
    all_events = [e for tag in tags for e in acc.Scalars(tag)]
    machines = [
        f"{m['cpu']} ({m['cores']} cores)" + "".join(f", {g}" for g in m["gpus"])
        for m in provenance.get("machines", [])
    ]
    # each resume records what differed from the run's start: its code and torch are the start's where not named
    changed = [resume.get("changed", {}) for resume in provenance.get("resumes", [])]
    code = then(
        (provenance.get("script_sha256") or "")[:8] or None, [(c.get("script_sha256") or "")[:8] for c in changed]
    )
    torch_version = then(
        provenance.get("packages", {}).get("torch"), [c.get("packages", {}).get("torch") for c in changed]
    )
    return {
        **meta,
        "run": run_dir.name,
        "code": code,
        "torch": torch_version,
        "machines": machines,
        "steps": np.array([e.step for e in returns]),
        "returns": np.array([e.value for e in returns]),
        "last_step": max(e.step for e in all_events),
        "sps": sps[-1].value if sps else float("nan"),
        "wall_s": busy_seconds([e.wall_time for e in all_events], process_starts(run_dir)),
        "evaluations": periodic_evaluations(run_dir / "stdout.log"),
        "resumed_at": resumed_at(run_dir),
        "signals": {
            tag: (np.array([e.step for e in es]), np.array([e.value for e in es])) for tag, es in signals.items()
        },
        "lengths": (np.array([e.step for e in lengths]), np.array([e.value for e in lengths])),
        "frame_cap": saved.get("max_episode_frames", 108_000) // saved.get("frame_skip", 4),
    }


# the signals a late-phase defect shows in: entropy collapse, a learning rate that never anneals, a critic that
# stops explaining returns, PPO's policy steps growing or dying out
LATE_PHASE = {
    "losses/entropy": "entropy",
    "charts/learning_rate": "learning rate",
    "losses/explained_variance": "explained variance",
    "losses/clipfrac": "clip fraction",
    "losses/approx_kl": "approx KL",
}
LATE_PHASE_WINDOW = 100_000


def late_phase(run: dict, step: int) -> dict:
    """A run's training signals at `step`: each one's mean over the LATE_PHASE_WINDOW agent steps up to it (the
    learning rate: its value there), its longest game so far and how many games the frame cap cut short."""
    out = {}
    for tag, name in LATE_PHASE.items():
        steps, values = run["signals"].get(tag, (np.array([]), np.array([])))
        recent = values[(steps > step - LATE_PHASE_WINDOW) & (steps <= step)]
        if tag == "charts/learning_rate":
            recent = values[steps <= step][-1:]
        out[name] = float(recent.mean()) if len(recent) else None
    steps, lengths = run["lengths"]
    played = lengths[steps <= step]
    out["longest game"] = int(played.max()) if len(played) else None
    out["games cut at the frame cap"] = int((played >= run["frame_cap"]).sum()) if len(played) else None
    return out


def resumed_at(run_dir: Path) -> list:
    """The agent steps a run was resumed from: a resume's event file opens with a START record at the checkpoint's
    step + 1 (the scripts' SummaryWriter purge_step), where it drops what the stopped process logged later."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event, _ in zip(EventFileLoader(str(path)).Load(), range(4)):  # the START record comes first
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                steps.append(event.step - 1)
                break
    return sorted(steps)


EVALUATION_LINE = re.compile(r"^eval at step ([\d,]+): (-?[\d.]+) .*\(([\d.]+)s\)", re.MULTILINE)


def periodic_evaluations(log: Path) -> list:
    """(agent step, seconds, mean return) of each periodic evaluation a run printed (benchmarks/run.py keeps its
    output); one per step, the last: a resume from an earlier checkpoint plays that step's evaluation again."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = {int(step.replace(",", "")): (float(s), float(mean)) for step, mean, s in EVALUATION_LINE.findall(text)}
    return [(step, s, mean) for step, (s, mean) in found.items()]


def evaluation_cost(run: dict) -> dict:
    """A run's periodic evaluations: how many, their seconds and share of its wall time, the last and the best."""
    seconds = sum(s for _, s, _ in run["evaluations"])
    step, last, _ = run["evaluations"][-1]
    best_step, _, best = max(run["evaluations"], key=lambda e: e[2])
    return {
        "count": len(run["evaluations"]),
        "seconds": seconds,
        "share_of_wall_time": seconds / run["wall_s"],
        "last": {"step": step, "seconds": last},
        "best": {"step": best_step, "mean": best},
    }


def read_evaluation(path: str, runs: list[dict], last_episodes: int) -> dict:
    """A `sample.py --json` file as a row: the run and step of the agent it played, its games' scores, how they were
    played, and the training return of the same run at that step (mean of its last games finished by then)."""
    try:
        played = json.loads(Path(path).read_text())
        checkpoint, step = Path(played["checkpoint"]), int(played["trained_steps"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path!r} is not a sample.py --json file ({e}).") from None
    run = next((r for r in runs if r["run"] == checkpoint.parent.parent.name), None)  # <run>/checkpoints/<file>
    if run is None:
        raise SystemExit(f"error: {path!r} played {str(checkpoint)!r}, a checkpoint of none of the runs reported.")
    scores = np.array([e["return"] for e in played["episodes"]])
    how = [
        "greedy" if played["greedy"] else "sampled actions",
        f"sticky actions {played['sticky_actions']}" if played["sticky_actions"] else "no sticky actions",
        *(["FIRE after a lost life"] if played["fire_after_life_loss"] else []),
        *([f"up to {played['noop_max']} no-op starts"] if "noop_max" in played else []),
        *([f"games capped at {played['max_episode_frames']:,} frames"] if "max_episode_frames" in played else []),
        f"seed {played['seed']}",
    ]
    return {
        "file": Path(path).name,
        "run": run["run"],
        "label": run.get("label", run["script"]),
        "game": game_name(played["env_id"]),
        "agent": checkpoint.name,
        "step": step,
        "games": len(scores),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "mean_length": played.get("mean_length"),
        "played": ", ".join(how),
        "training_return": float(curve(run, np.array([step]), last_episodes)[0]),
    }


def process_starts(run_dir: Path) -> list:
    """When each process of a run (its start and each resume) opened its events file: the time in the file's name."""
    names = [p.name.split(".") for p in run_dir.glob("events.out.tfevents.*")]
    return [float(name[3]) for name in names if len(name) > 3 and name[3].isdigit()]


def busy_seconds(times: list, starts: list) -> float:
    """Seconds from a run's first event to its last, less the time it lay stopped before a resume (from one
    process's last event to the next process's start)."""
    times, total = sorted(times), 0.0
    for a, b in zip(times, times[1:]):
        restarts = [s for s in starts if a < s <= b]
        total += b - (max(restarts) if restarts else a)
    return total


def then(start, resumed: list) -> Optional[str]:
    """What a run started with, then each other value its resumes ran with in turn ("a then b then a");
    `resumed` holds one value per resume, empty where that resume ran with `start`."""
    ran = [start] + [value or start for value in resumed]
    kept = [value for i, value in enumerate(ran) if i == 0 or value != ran[i - 1]]
    return " then ".join(value or "?" for value in kept) if any(kept) else None


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle half (a quarter cut from each end, rounded down, as
    scipy.stats.trim_mean(x, 0.25) and rliable compute it)."""
    x = np.sort(np.asarray(values, dtype=float))
    cut = int(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean())


def bootstrap_interval(finals_by_game: list, repetitions: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% stratified-bootstrap interval of the IQM: each game's seeds resampled with replacement,
    the IQM of the pooled resample, its 2.5th and 97.5th percentiles (rliable's percentile method)."""
    rng = np.random.default_rng(seed)
    finals_by_game = [np.asarray(f, dtype=float) for f in finals_by_game]
    stats = [
        iqm(np.concatenate([f[rng.integers(0, len(f), len(f))] for f in finals_by_game])) for _ in range(repetitions)
    ]
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def performance_profile(games: dict, taus) -> list[float]:
    """rliable's run-score profile: at each tau, each game's fraction of runs scoring above tau, averaged
    over the games (so each game weighs the same)."""
    return [float(np.mean([(np.asarray(v) > t).mean() for v in games.values()])) for t in taus]


def human_normalised(table: dict, refs: dict) -> dict:
    """{script: {game: [each seed's final, 0 = random play, 1 = the human tester]}} for scripts run on
    two or more games with reference scores (the field's aggregate needs several games)."""
    norms = refs.get("human_normalisation", {}).get("scores", {})
    by_script = defaultdict(dict)
    for (script, game), row in table.items():
        rom = re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()  # SpaceInvaders -> space_invaders
        if rom in norms:
            random_score, human = norms[rom]
            by_script[script][game] = [(f - random_score) / (human - random_score) for f in row["finals"]]
    return {script: games for script, games in by_script.items() if len(games) >= 2}


def across_games(games: dict) -> dict:
    """rliable's aggregates of {game: normalised finals}: the IQM of every run pooled with its stratified-bootstrap
    interval; the median and the mean over games of each game's mean over runs (each game weighs the same)."""
    pooled = np.concatenate([np.asarray(v, dtype=float) for v in games.values()])
    game_means = [float(np.mean(v)) for v in games.values()]
    return {
        "games": sorted(games),
        "runs": len(pooled),
        "iqm": iqm(pooled),
        "iqm_interval": list(bootstrap_interval(list(games.values()))),
        "median": float(np.median(game_means)),
        "mean": float(np.mean(game_means)),
    }


def game_name(env_id: str) -> str:
    name = env_id.split("/")[-1].split("-")[0]
    return name.replace("NoFrameskip", "")


def summarise(runs: list[dict], last_episodes: int, at_steps: tuple = ()) -> dict:
    """{(script, game): figures over seeds}; `along` holds each seed's return at the `at_steps` every seed reached."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r.get("label", r["script"]), game_name(r["env_id"]))].append(r)
    table = {}
    for key, group in sorted(groups.items()):
        finals = np.array([r["returns"][-last_episodes:].mean() for r in group])
        codes = sorted({f"{r.get('code') or 'not recorded'}, torch {r.get('torch') or '?'}" for r in group})
        table[key] = {
            "seeds": sorted(r["seed"] for r in group),
            "finals": finals.tolist(),
            "mean": float(finals.mean()),
            "std": float(finals.std()),
            "iqm": iqm(finals),
            "iqm_interval": bootstrap_interval([finals]) if len(finals) > 1 else None,
            "code": codes,
            "steps": int(min(r["last_step"] for r in group)),
            "sps": float(np.mean([r["sps"] for r in group])),
            "wall_h": float(np.mean([r["wall_s"] for r in group]) / 3600),
            "along": along(group, at_steps, last_episodes),
            "resumed_at": {r["run"]: r["resumed_at"] for r in group if r["resumed_at"]},
            "periodic_evaluations": {r["run"]: evaluation_cost(r) for r in group if r["evaluations"]},
            "late_phase": {
                r["run"]: {str(s): late_phase(r, s) for s in sorted({*at_steps, r["last_step"]}) if s <= r["last_step"]}
                for r in group
            },
            "runs": group,
        }
    return table


def curve(run: dict, grid: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` games finished by each grid step (nan before the first game)."""
    out = np.full(len(grid), np.nan)
    for i, g in enumerate(grid):
        seen = run["returns"][run["steps"] <= g]
        if len(seen):
            out[i] = seen[-window:].mean()
    return out


def references_for(refs: dict, game: str) -> list[dict]:
    return [dict(r, value=r["scores"][game]) for r in refs["references"] if game in r["scores"]]


def family(label: str) -> tuple:
    """The algorithms a row's script implements (a label is the script's name, then any flags)."""
    return FAMILIES.get(label.split()[0], ())


def along(group: list[dict], at_steps: list[int], window: int) -> dict:
    """Each seed's reading at each of `at_steps` the seeds all reached with a game finished by then."""
    readings = {s: [float(curve(r, np.array([s]), window)[0]) for r in group] for s in at_steps}
    last = min(r["last_step"] for r in group)
    return {int(s): v for s, v in readings.items() if s <= last and not np.isnan(v).any()}


def curves_for(refs: dict, game: str, scripts) -> list[dict]:
    """The published learning curves on `game` of the algorithms these scripts implement."""
    families = {f for s in scripts for f in family(s)}
    return [
        dict(c, points=c["games"][game])
        for c in refs.get("curves", [])
        if game in c["games"] and c["algorithm"] in families
    ]


def value_at(points: dict, steps: int) -> Optional[float]:
    """A published curve's return at `steps`, linear between its points; None outside them."""
    xs, ys = points["steps"], points["returns"]
    return float(np.interp(steps, xs, ys)) if xs[0] <= steps <= xs[-1] else None


def published_at(curves: list[dict], script: str, steps: int) -> str:
    """'name value' for each published curve of the script's algorithm at `steps` ('(interpolated)' after
    a value between the curve's published points)."""
    mine = [c for c in curves if c["algorithm"] in family(script)]
    # A value more than 0.5% of the steps from every published point is read off the line between two: said so.
    between = {c["name"]: min(abs(x - steps) for x in c["points"]["steps"]) > 0.005 * steps for c in mine}
    values = [(c["name"], value_at(c["points"], steps)) for c in mine]
    found = [f"{name} {v:.1f}{' (interpolated)' * between[name]}" for name, v in values if v is not None]
    if found:
        return "; ".join(found)
    if mine:
        return f"none (published from {budget_label(min(c['points']['steps'][0] for c in mine))})"
    return "none"


def interval(row: dict) -> str:
    if row["iqm_interval"] is None:
        return f"{row['iqm']:.1f} (1 seed)"
    low, high = row["iqm_interval"]
    return f"{row['iqm']:.1f} [{low:.1f}, {high:.1f}]"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def budget_label(steps: int) -> str:
    return f"{steps / 1e6:.3g}M steps" if steps >= 1e5 else f"{steps:,} steps"


def write_report(args: Args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(args.runs_dir).is_dir():
        raise SystemExit(f"error: {args.runs_dir!r} is not a folder.")
    if any(s < 1 for s in args.at_steps):
        raise SystemExit(f"error: --at-steps takes positive agent steps, got {args.at_steps}.")
    runs = [r for d in sorted(Path(args.runs_dir).iterdir()) if d.is_dir() and (r := read_run(d))]
    if not runs:
        raise SystemExit(f"error: no runs with logged games under {args.runs_dir!r}.")
    refs = json.loads((HERE / "published_scores.json").read_text())
    notes = []
    for r in runs:  # runs of one script made with different flags, code or torch are rows of their own
        flags = {x.get("script_args", "") for x in runs if x["script"] == r["script"]}
        r["label"] = f"{r['script']} {r.get('script_args', '')}".strip() if len(flags) > 1 else r["script"]
    budgets = defaultdict(set)  # seeds that reached different budgets are rows of their own, never averaged
    for r in runs:
        budgets[r["label"]].add(budget_label(r["last_step"]))
    for r in runs:
        if len(budgets[r["label"]]) > 1:
            note = f"**Note: the runs of {r['label']} reached different budgets; each budget is a row of its own.**"
            notes += [note] if note not in notes else []
            r["label"] += f" [{budget_label(r['last_step'])}]"
    origins = defaultdict(set)
    for r in runs:
        origins[r["label"]].add((r.get("code"), r.get("torch")))
    for r in runs:
        if len(origins[r["label"]]) > 1:
            r["label"] += f" [code {r.get('code') or 'not recorded'}, torch {r.get('torch') or '?'}]"
            note = (
                f"**Note: the runs of {r['label'].split(' [')[0]} came from different code or torch versions; "
                "they are separate rows, not averaged.**"
            )
            notes += [note] if note not in notes else []
    table = summarise(runs, args.last_episodes, tuple(args.at_steps))
    evaluations = [read_evaluation(path, runs, args.last_episodes) for path in args.evaluations]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = sorted({m for r in runs for m in r["machines"]}) or sorted(
        {r["hardware"] for r in runs if r.get("hardware")}
    )
    hardware_line = args.hardware or ("; ".join(recorded) if recorded else "not recorded")
    lines = [
        "# Benchmark report",
        "",
        f"Generated by `benchmarks/report.py` from the TensorBoard logs in `{args.runs_dir}`. "
        f"Final return = mean of the last {args.last_episodes} games of each seed; mean +- std over "
        "seeds (population std). Training returns are raw game scores of whole games.",
        f"Hardware: {hardware_line}.",
        "",
        *[n + "\n" for n in notes],
    ]
    plots = {}  # what each game's figure shows, for report.json
    for game in sorted({g for _, g in table}):
        rows = {script: row for (script, g), row in table.items() if g == game}
        curves = curves_for(refs, game, rows)
        lines += [
            f"## {game}",
            "",
            "| script | budget | seeds | final return | per seed | published at this budget "
            "| SPS | wall time (h) | IQM [95% CI] | code (sha256), torch |",
            "|---" * 10 + "|",
        ]
        for script, row in rows.items():
            short = "" if row["steps"] >= 9_900_000 else " (short run: not comparable with 10M references)"
            lines.append(
                f"| {script} | {budget_label(row['steps'])}{short} | {len(row['seeds'])} | "
                f"{row['mean']:.1f} +- {row['std']:.1f} | {', '.join(f'{v:.1f}' for v in row['finals'])} | "
                f"{published_at(curves, script, row['steps'])} | "
                f"{row['sps']:,.0f} | {row['wall_h']:.2f} | {interval(row)} "
                f"| {'; '.join(row['code'])} |"
            )
        resumed = [(r, at) for row in rows.values() for r, at in row["resumed_at"].items()]
        if resumed:
            lines += [
                "",
                "Resumed (a resume starts new games, so the run is not the one an unbroken run of its seed makes):",
            ]
            lines += [f"- {r}: from {', '.join(f'{s:,}' for s in at)} steps" for r, at in resumed]
        along = [(script, s, v) for script, row in rows.items() for s, v in row["along"].items()]
        if along:
            lines += ["", "Along the way (each seed's mean of its last games finished by then):", ""]
            lines += ["| script | at | per seed | mean | published there |", "|---|---|---|---|---|"]
            lines += [
                f"| {script} | {budget_label(s)} | {', '.join(f'{x:.1f}' for x in v)} | {np.mean(v):.1f} "
                f"| {published_at(curves, script, s)} |"
                for script, s, v in along
            ]
        signals = [
            (r, int(s), x) for row in rows.values() for r, at in row["late_phase"].items() for s, x in at.items()
        ]
        if any(x["entropy"] is not None for _, _, x in signals):
            names = list(LATE_PHASE.values())
            lines += [
                "",
                f"The late phase (each run's training signals, the mean over the {LATE_PHASE_WINDOW:,} steps up to "
                "each point; the learning rate there; games so far). Entropy collapse, a learning rate that never "
                "anneals, a critic that stops explaining returns or games cut at the frame cap show here:",
                "",
                f"| run | at | {' | '.join(names)} | longest game (steps) | games cut at the frame cap |",
                "|---" * (len(names) + 4) + "|",
            ]
            lines += [
                f"| {r} | {s:,} | "
                + " | ".join("-" if x[n] is None else f"{x[n]:.3g}" for n in names)
                + f" | {'-' if x['longest game'] is None else format(x['longest game'], ',')} "
                f"| {'-' if x['games cut at the frame cap'] is None else x['games cut at the frame cap']} |"
                for r, s, x in signals
            ]
        played = [e for e in evaluations if e["game"] == game]
        if played:
            lines += [
                "",
                "Agents played back on whole games by `sample.py` (the evaluation protocol: no episodic life, random "
                "no-op starts, the raw score), beside the training return of the same run at the agent's step (mean "
                f"of its last {args.last_episodes} games finished by then); the two are never averaged together:",
                "",
                "| run | agent | at step | evaluation return: games, mean +- std [min, max] | mean game length "
                "| training return there | played with | file |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {e['run']} | {e['agent']} | {e['step']:,} | {e['games']} games, {e['mean']:.1f} +- {e['std']:.1f} "
                f"[{e['min']:.0f}, {e['max']:.0f}] | {e['mean_length'] or float('nan'):,.0f} steps "
                f"| {e['training_return']:.1f} | {e['played']} | {e['file']} |"
                for e in played
            ]
        timed = [(r, cost) for row in rows.values() for r, cost in row["periodic_evaluations"].items()]
        if timed:
            lines += [
                "",
                "Periodic evaluations (`--eval-every`, from each run's stdout.log): their cost, since a trained "
                "agent's games are longer, and the best, the one `best.pt` keeps (the best of many small evaluations "
                "overstates its agent: play it again on fresh games):",
                "",
                "| run | evaluations | seconds in all | share of the run's wall time | the last: at step, seconds "
                "| the best: at step, mean return |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r} | {c['count']} | {c['seconds']:,.0f} | {c['share_of_wall_time']:.1%} "
                f"| {c['last']['step']:,}, {c['last']['seconds']:.0f} "
                f"| {c['best']['step']:,}, {c['best']['mean']:.1f} |"
                for r, c in timed
            ]
        game_refs = references_for(refs, game)
        if game_refs:
            lines += ["", "Published references:", "", "| reference | budget | return | source |", "|---|---|---|---|"]
            for r in game_refs:
                value = f"{r['value']['mean']}" + (f" +- {r['value']['std']}" if "std" in r["value"] else "")
                lines.append(f"| {r['name']} | {budget_label(r['budget_steps'])} | {value} | {r['source']} |")
        if curves:
            lines += ["", "Published curves:", ""] + [f"- {c['name']}: {c['source']}; {c['how']}." for c in curves]
        lines.append("")

        fig, ax = plt.subplots(figsize=(9, 4.5))
        longest = max(row["steps"] for row in rows.values())
        for i, (script, row) in enumerate(rows.items()):
            color = f"C{i}"
            grid = np.linspace(0, row["steps"], 200)
            runs_curves = np.array([curve(r, grid, args.last_episodes) for r in row["runs"]])
            with warnings.catch_warnings():  # grid points before a seed's first game are nan
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, lo, hi = np.nanmean(runs_curves, 0), np.nanmin(runs_curves, 0), np.nanmax(runs_curves, 0)
            ax.plot(grid, mean, color=color, label=f"{script} ({plural(len(row['runs']), 'seed')})")
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2)
            # A final published return is a line only where the run is as long as that reference.
            for r in game_refs:
                if r["algorithm"] in family(script) and row["steps"] >= 0.99 * r["budget_steps"]:
                    ax.axhline(
                        r["value"]["mean"],
                        linestyle=":",
                        linewidth=0.8,
                        color=color,
                        label=f"{r['name']}, final at {budget_label(r['budget_steps'])}",
                    )
        # Published curves up to the runs' budget, in black, one line style each.
        drawn = []
        for c, style in zip(curves, ["--", "-.", ":", (0, (5, 1))]):
            xs = [x for x in c["points"]["steps"] if x <= longest]
            end = value_at(c["points"], longest)
            if end is not None and longest not in xs:
                xs.append(longest)
            if xs:
                ys = [value_at(c["points"], x) for x in xs]
                ax.plot(
                    xs,
                    ys,
                    linestyle=style,
                    marker=".",
                    color="0.2",
                    linewidth=1,
                    label=f"{c['name']} (published{', approximate' if 'approximate' in c['how'] else ''})",
                )
                drawn.append(c["name"])
        ax.set_xlim(0, longest)
        note = (
            ", published curves up to the same budget"
            if drawn
            else "; no published curve starts this early"
            if curves
            else ""
        )
        ax.set_title(f"{game}: runs of {budget_label(longest)}{note}", fontsize=10)
        ax.set_xlabel("agent steps")
        ax.set_ylabel(f"episodic return (mean of last {args.last_episodes} games)")
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.canvas.draw()
        plots[game] = {
            "x_max": ax.get_xlim()[1],
            "y_range": list(ax.get_ylim()),
            "labels": [t.get_text() for t in legend.get_texts()],
            "legend_clear_of_axes": not legend.get_window_extent().overlaps(ax.get_window_extent()),
        }
        fig.savefig(out / f"{game}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        lines += [f"![{game}]({game}.png)", ""]
    aggregate = {}
    normalised = human_normalised(table, refs)
    if normalised:
        lines += [
            "## Across games, human-normalised",
            "",
            f"Each seed's final as (score - random) / (human - random), {refs['human_normalisation']['source']}. "
            "IQM over every game's seeds, 95% stratified-bootstrap interval (seeds resampled within each game); "
            "median and mean over games of each game's mean over its seeds, so each game weighs the same "
            "(rliable's aggregate median and mean).",
            "",
            "| script | games | runs | IQM [95% CI] | median | mean |",
            "|---|---|---|---|---|---|",
        ]
        fig, ax = plt.subplots(figsize=(6, 4))
        for script, games in normalised.items():
            aggregate[script] = across_games(games)
            row = aggregate[script]
            low, high = row["iqm_interval"]
            lines.append(
                f"| {script} | {', '.join(row['games'])} | {row['runs']} | {row['iqm']:.2f} "
                f"[{low:.2f}, {high:.2f}] | {row['median']:.2f} | {row['mean']:.2f} |"
            )
            pooled = np.concatenate([np.asarray(v) for v in games.values()])
            taus = np.linspace(min(0.0, pooled.min()), max(1.0, pooled.max()), 200)
            ax.plot(taus, performance_profile(games, taus), label=script)
        ax.set_xlabel("human-normalised score tau")
        ax.set_ylabel("fraction of runs with score > tau (games weigh equally)")
        ax.set_title("Performance profile (Agarwal et al. 2021)", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        fig.savefig(out / "performance_profile.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        lines += ["", "![performance profile](performance_profile.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    figures = {f"{s}/{g}": {k: v for k, v in row.items() if k != "runs"} for (s, g), row in table.items()}
    (out / "report.json").write_text(
        json.dumps({**figures, "plots": plots, "aggregate": aggregate, "evaluations": evaluations}, indent=2)
    )
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    write_report(tyro.cli(Args))
