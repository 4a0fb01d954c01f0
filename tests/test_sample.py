"""sample.py plays back checkpoints of every training script: scores, JSON, video, frames, and
refuses bad files with one sentence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BACKENDS, ROOT, tiny_args

import sample


@pytest.fixture
def checkpoint(script, tmp_path):
    args = tiny_args(script, tmp_path, iterations=1, run_name="trained")
    return script.train(args)["checkpoint"]


def play_args(path, tmp_path, **overrides):
    settings = dict(episodes=1, max_episode_frames=200, cuda=False, json=str(tmp_path / "scores.json"))
    settings.update(overrides)
    return sample.Args(checkpoint=str(path), **settings)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plays_a_checkpoint_of_every_script_and_writes_json(script, checkpoint, tmp_path, backend):
    summary = sample.play(play_args(checkpoint, tmp_path, env_backend=backend))
    written = json.loads((tmp_path / "scores.json").read_text())
    assert written == summary
    assert written["script"] == script.SCRIPT and written["env_id"] == "Breakout-v5"
    (episode,) = written["episodes"]
    assert {"return", "length"} <= episode.keys()
    assert 0 < episode["length"] <= 50  # capped at 200 frames = 50 agent steps
    assert written["mean_return"] == episode["return"] and written["std_return"] == 0.0
    assert {"min_return", "max_return", "mean_length"} <= written.keys()


def test_several_envs_play_exactly_the_asked_number_of_games(script, checkpoint, tmp_path):
    summary = sample.play(play_args(checkpoint, tmp_path, episodes=3, num_envs=2, greedy=True))
    assert len(summary["episodes"]) == 3
    assert sorted(e["env"] for e in summary["episodes"]) == [0, 0, 1]


def test_writes_video_and_frames_of_each_game(script, checkpoint, tmp_path):
    import imageio_ffmpeg
    from PIL import Image

    summary = sample.play(
        play_args(
            checkpoint, tmp_path, episodes=2, save_video=str(tmp_path / "video"), save_frames=str(tmp_path / "frames")
        )
    )
    for k, episode in enumerate(summary["episodes"]):
        video = tmp_path / "video" / f"episode_{k:03d}.mp4"  # MP4 on every machine, no system ffmpeg needed
        assert episode["video"] == str(video)
        assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == episode["length"] + 1
        frames = sorted((tmp_path / "frames" / f"episode_{k:03d}").glob("*.png"))
        assert len(frames) == episode["length"] + 1  # the first screen, then one per step
        assert Image.open(frames[0]).size == (160, 210)  # full colour screen, not the 84x84 input
        assert Image.open(frames[0]).mode == "RGB"


def test_a_run_folder_means_its_latest_checkpoint(script, checkpoint, tmp_path):
    run_dir = tmp_path / "runs" / "trained"
    summary = sample.play(play_args(run_dir, tmp_path))
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "latest.pt")


def test_another_game_needs_the_same_action_space(tmp_path):
    import ppo_atari

    path = ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=1, run_name="b"))["checkpoint"]
    with pytest.raises(sample.SampleError, match="Pong-v5 has 6 actions but the agent was trained with 4"):
        sample.play(play_args(path, tmp_path, env_id="Pong-v5"))
    full = ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=1, run_name="f", full_action_space=True))
    assert sample.play(play_args(full["checkpoint"], tmp_path, env_id="Pong-v5"))["env_id"] == "Pong-v5"


def run_sample(*flags, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "sample.py"), *flags], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def one_sentence_error(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if "Warning" not in l and "warnings.warn" not in l]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), proc.stderr
    return lines[0]


def test_bad_files_are_refused_with_one_sentence(tmp_path):
    import ppo_atari

    good = ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=1, run_name="g"))["checkpoint"]
    state = torch.load(good, weights_only=True)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes(open(good, "rb").read()[:2000])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save({**state, "script": "dqn_atari"}, tmp_path / "other_script.pt")
    cases = {
        "missing.pt": "does not exist",
        "empty.pt": "is empty",
        "truncated.pt": "not a loadable checkpoint",
        "foreign.pt": "not a checkpoint written by these scripts",
        "other_script.pt": "written by dqn_atari.py, which is not in",
    }
    for name, message in cases.items():
        assert message in one_sentence_error(run_sample(str(tmp_path / name), cwd=tmp_path)), name
    assert "--episodes must be positive" in one_sentence_error(run_sample(good, "--episodes", "0", cwd=tmp_path))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"script": "ppo_atari", "args": {}, "model": Evil(), "num_actions": 4}, path)
    message = one_sentence_error(run_sample(str(path), cwd=tmp_path))
    assert "could run code" in message
    assert not marker.exists()


def test_fire_is_pressed_after_a_lost_life_as_in_training(tmp_path, monkeypatch):
    import ppo_atari

    path = ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=1, run_name="fire"))["checkpoint"]
    sent, step = [], ppo_atari.AtariEnvs.step

    def spy(self, actions):
        out = step(self, actions)
        sent.append((np.array(actions), out[4]))
        return out

    monkeypatch.setattr(ppo_atari.AtariEnvs, "step", spy)
    sample.play(play_args(path, tmp_path, greedy=True, max_episode_frames=4000))
    actions, lives = np.concatenate([a for a, _ in sent]), np.concatenate([l for _, l in sent])
    lost = [t for t in range(1, len(lives) - 1) if 0 < lives[t] < lives[t - 1]]
    assert lost, "the agent loses a life of Breakout within 1,000 steps"
    assert all(actions[t + 1] == 1 for t in lost)  # Breakout's FIRE relaunches the ball


def test_hub_folder_holds_the_checkpoint_video_args_results_and_a_card_the_hub_reads(checkpoint, tmp_path):
    from huggingface_hub import ModelCard

    folder = tmp_path / "hub"
    summary = sample.play(play_args(checkpoint, tmp_path, episodes=2, env_backend="ale", hub_folder=str(folder)))
    state = torch.load(checkpoint, weights_only=True)
    expected = ["README.md", "args.json", f"{state['script']}.pt", "replay.mp4", "results.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    assert json.loads((folder / "results.json").read_text())["mean_return"] == summary["mean_return"]
    assert json.loads((folder / "args.json").read_text()) == state["args"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "pytorch" and "reinforcement-learning" in card.data.tags
    result = card.data.eval_results[0]
    assert result.dataset_name == state["args"]["env_id"]
    assert result.metric_value == f"{summary['mean_return']:.2f} +/- {summary['std_return']:.2f}"
    assert f"python {state['script']}.py" in card.text and "2 whole games" in card.text


def test_push_to_hub_uploads_the_folder_with_the_hub_client(checkpoint, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create", repo_id, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", folder_path, repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    folder = tmp_path / "hub"
    sample.play(play_args(checkpoint, tmp_path, env_backend="ale", hub_folder=str(folder), push_to_hub="me/agent"))
    assert calls[0] == ("create", "me/agent", True)
    assert calls[1][:3] == ("upload", str(folder), "me/agent") and "README.md" in calls[1][3]


def test_push_to_hub_without_a_login_or_the_library_is_one_sentence_before_playing(checkpoint, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(sample, "play_games", lambda *a: pytest.fail("played before refusing"))
    args = play_args(checkpoint, tmp_path, hub_folder=str(tmp_path / "hub"), push_to_hub="me/agent")
    with pytest.raises(sample.SampleError, match="needs a Hugging Face login"):
        sample.play(args)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(sample.SampleError, match="pip install huggingface_hub"):
        sample.play(args)
    with pytest.raises(sample.SampleError, match="needs --hub-folder"):
        sample.play(play_args(checkpoint, tmp_path, push_to_hub="me/agent"))


def test_a_failed_upload_is_one_sentence_and_keeps_the_folder(checkpoint, tmp_path, monkeypatch):
    import huggingface_hub

    class RefusingApi:
        def create_repo(self, repo_id, exist_ok):
            raise RuntimeError("403 Forbidden: you cannot write to me/agent\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", RefusingApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    folder = tmp_path / "hub"
    refusal = "could not upload .* \\(403 Forbidden: you cannot write to me/agent\\)"
    with pytest.raises(sample.SampleError, match=refusal):
        sample.play(play_args(checkpoint, tmp_path, env_backend="ale", hub_folder=str(folder), push_to_hub="me/agent"))
    assert (folder / "README.md").is_file()
