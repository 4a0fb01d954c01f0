"""What a run shows while it trains, checked on every script: evaluations when due and at the end,
videos of evaluation games, W&B tracking (offline), and that none of it can stop training."""

import dataclasses
import os
import struct

import numpy as np
import pytest
import torch
from conftest import BACKENDS, TINY, tiny_args


def scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def watched_args(script, tmp_path, iterations=3, **overrides):
    """A short run that evaluates after every other iteration, on games capped at 50 agent steps."""
    batch = TINY[script.SCRIPT]["num_envs"] * TINY[script.SCRIPT]["num_steps"]
    settings = dict(eval_every=2 * batch, eval_episodes=2, max_episode_frames=200, run_name="watched")
    return tiny_args(script, tmp_path, iterations=iterations, **{**settings, **overrides})


def test_evaluations_are_logged_when_due_and_once_more_at_the_end(script, tmp_path):
    args = watched_args(script, tmp_path, iterations=3)
    batch = args.num_envs * args.num_steps
    out = script.train(args)
    means = scalars(tmp_path / "runs" / "watched", "eval/return_mean")
    assert [step for step, _ in means] == [2 * batch, 3 * batch]  # when due, then at the end
    assert [step for step, _ in scalars(tmp_path / "runs" / "watched", "eval/return_std")] == [2 * batch, 3 * batch]
    assert out["eval_return_mean"] == pytest.approx(means[-1][1])
    assert np.isfinite(out["eval_return_std"])


def test_no_second_evaluation_when_the_last_iteration_already_had_one(script, tmp_path):
    args = watched_args(script, tmp_path, iterations=4)
    script.train(args)
    batch = args.num_envs * args.num_steps
    assert [s for s, _ in scalars(tmp_path / "runs" / "watched", "eval/return_mean")] == [2 * batch, 4 * batch]


def test_evaluation_leaves_training_untouched(script, tmp_path):
    weights = []
    for every in (0, TINY[script.SCRIPT]["num_envs"] * TINY[script.SCRIPT]["num_steps"]):
        out = script.train(watched_args(script, tmp_path, run_name=f"eval-{every}", eval_every=every, seed=4))
        weights.append(torch.load(out["checkpoint"], weights_only=True)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_video_records_each_evaluations_first_game_in_colour(script, tmp_path, backend):
    import imageio_ffmpeg

    args = watched_args(script, tmp_path, iterations=2, capture_video=True, env_backend=backend)
    script.train(args)
    batch = args.num_envs * args.num_steps
    videos = tmp_path / "runs" / "watched" / "videos"
    assert sorted(p.name for p in videos.iterdir()) == [f"eval_{2 * batch}.mp4"]
    reader = imageio_ffmpeg.read_frames(str(videos / f"eval_{2 * batch}.mp4"))
    meta = reader.__next__()
    frames = [np.frombuffer(f, np.uint8).reshape(210, 160, 3) for f in reader]
    assert meta["size"] == (160, 210) and meta["fps"] == 15.0  # the full screen at 60 Hz / frame skip 4
    assert frames[0].std(axis=-1).max() > 0  # colour, not grey


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_video_holds_env_0s_first_game_from_its_first_screen_to_its_end(script, tmp_path, backend, monkeypatch):
    import imageio_ffmpeg

    lengths, make_envs = [], script.make_envs

    def spied(args, backend, seed, num_envs, full_frames=False):
        envs = make_envs(args, backend, seed, num_envs, full_frames)
        if not full_frames:  # the evaluation's own envs: count env 0's first game
            step = envs.step

            def counting(actions):
                out = step(actions)
                lengths.append(bool(out[2][0] or out[3][0]))
                return out

            envs.step = counting
        return envs

    monkeypatch.setattr(script, "make_envs", spied)
    args = watched_args(script, tmp_path, eval_episodes=3, max_episode_frames=400)
    agent = script.Agent(4, args.frame_stack, *([16] if script.SCRIPT == "a2c_lstm_atari" else []))
    video = tmp_path / "eval.mp4"
    script.evaluate(agent, args, script.resolve_backend(backend), torch.device("cpu"), seed=3, video=video)
    first_game = lengths.index(True) + 1
    assert 10 < first_game <= 100 and len(lengths) > first_game  # play went on after that game
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == first_game + 1  # first screen, then one per step


def test_a_failing_video_encoder_is_one_warning_and_training_goes_on(script, tmp_path, monkeypatch, capsys):
    import imageio_ffmpeg

    def broken(*args, **kwargs):
        raise RuntimeError("ffmpeg exited with code 1")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    args = watched_args(script, tmp_path, iterations=3, capture_video=True)
    out = script.train(args)
    assert out["global_step"] == 3 * args.num_envs * args.num_steps
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 2 and all("could not write the video" in w and "ffmpeg exited" in w for w in warnings)
    run_dir = tmp_path / "runs" / "watched"
    assert len(scalars(run_dir, "eval/return_mean")) == 2 and len(scalars(run_dir, "charts/SPS")) == 3
    assert list((run_dir / "videos").iterdir()) == []  # no half-written file left


def open_threads_and_files():
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluations_close_their_envs_and_leak_no_threads_or_files(script, backend, monkeypatch, tmp_path):
    counts, make_envs, close = {"made": 0, "closed": 0}, script.make_envs, script.AtariEnvs.close

    def counted(*args, **kwargs):  # keeps no reference: the envs live exactly as long as the evaluation holds them
        counts["made"] += 1
        return make_envs(*args, **kwargs)

    def counted_close(envs):
        counts["closed"] += 1
        close(envs)

    monkeypatch.setattr(script, "make_envs", counted)
    monkeypatch.setattr(script.AtariEnvs, "close", counted_close)
    args = script.Args(num_envs=4, eval_episodes=4, max_episode_frames=60, env_backend=backend)
    agent = script.Agent(4, args.frame_stack, *([16] if script.SCRIPT == "a2c_lstm_atari" else []))
    for seed in range(2):  # warm up: torch's and the backend's own pools
        script.evaluate(agent, args, backend, torch.device("cpu"), seed, video=tmp_path / f"{seed}.mp4")
    before = open_threads_and_files()
    for seed in range(5):
        script.evaluate(agent, args, backend, torch.device("cpu"), seed, video=tmp_path / f"{seed}.mp4")
        assert counts["closed"] == counts["made"]  # the evaluation's envs and the video's twin
    # A leak grows by 2 or more threads and files per evaluation (10+ here); other tests' background
    # threads (TensorBoard writers, W&B) may still come and go meanwhile.
    after = open_threads_and_files()
    assert counts["made"] == 14 and after[0] - before[0] < 5 and after[1] - before[1] < 5, (before, after)


# --- W&B, offline (no network here or in CI) ------------------------------------------------------


def wandb_records(path):
    """Records of a W&B transaction log (.wandb): a 7-byte header, then LevelDB-log blocks of 32 KiB."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pieces = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2, 3, 4):  # full, first, middle, last
            pieces = chunk if kind in (1, 2) else pieces + chunk
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pieces)
                yield record


def offline_runs(run_dir):
    """{W&B run id: (config, history keys)} of every offline W&B run in a run folder."""
    runs = {}
    for log in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        config, keys = {}, set()
        for r in wandb_records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run_id = r.run.run_id
                config.update({c.key: c.value_json for c in r.run.config.update})
            elif kind == "config":
                config.update({c.key: c.value_json for c in r.config.update})
            elif kind == "history":
                keys |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        runs.setdefault(run_id, []).append((config, keys))
    return runs


def test_track_mirrors_config_returns_evaluations_and_videos_to_an_offline_wandb_run(tmp_path, monkeypatch):
    import a2c_atari

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = watched_args(
        a2c_atari, tmp_path, iterations=12, capture_video=True, track=True, checkpoint_every=6, max_episode_frames=80
    )
    first = a2c_atari.train(dataclasses.replace(args, total_timesteps=6 * args.num_envs * args.num_steps))
    a2c_atari.train(dataclasses.replace(args, resume=first["run_dir"], run_name=None))
    runs = offline_runs(tmp_path / "runs" / "watched")
    assert len(runs) == 1  # the resumed run continued the same W&B run
    ((run_id, parts),) = runs.items()
    assert len(parts) == 2
    config, keys = parts[0]
    assert config["env_id"] == '"Breakout-v5"' and config["seed"] == "1" and config["track"] == "true"
    assert {"charts/episodic_return", "eval/return_mean", "eval/return_std", "losses/value_loss"} <= keys
    assert any(k.startswith("eval/video") for k in keys)
    assert torch.load(first["checkpoint"], weights_only=True)["wandb_id"] == run_id


def test_a_wandb_failure_is_one_warning_and_training_goes_on(tmp_path, monkeypatch, capsys):
    import wandb

    import ppo_atari

    def unreachable(**kwargs):
        raise wandb.errors.CommError("could not reach the W&B server")

    monkeypatch.setattr(wandb, "init", unreachable)
    args = tiny_args(ppo_atari, tmp_path, iterations=2, run_name="nowandb", track=True)
    out = ppo_atari.train(args)
    assert out["global_step"] == 2 * args.num_envs * args.num_steps
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert warnings == [
        "warning: W&B tracking could not start (could not reach the W&B server); going on with TensorBoard alone."
    ]
    assert "wandb_id" not in torch.load(out["checkpoint"], weights_only=True)


def test_track_without_wandb_installed_is_one_sentence(script, monkeypatch):
    real = script.importlib.util.find_spec
    monkeypatch.setattr(script.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(script.UsageError, match=r"^--track needs wandb: pip install wandb\.$"):
        script.check_args(script.Args(track=True))
    with pytest.raises(script.UsageError, match="--capture-video records evaluation games"):
        script.check_args(script.Args(capture_video=True, eval_every=0))
