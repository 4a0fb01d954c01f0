"""sample.py plays back checkpoints of every training script: scores, JSON, video, frames, and
refuses bad files with one sentence."""

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BACKENDS, ROOT, TINY, tiny_args

import sample


@pytest.fixture
def checkpoint(script, tmp_path):
    args = tiny_args(script, tmp_path, iterations=1, run_name="trained")
    return script.train(args)["checkpoint"]


@pytest.fixture(scope="module")
def ppo_checkpoint(tmp_path_factory):
    """One tiny ppo_atari checkpoint for the tests that only read it."""
    import ppo_atari

    tmp = tmp_path_factory.mktemp("ppo")
    return Path(ppo_atari.train(tiny_args(ppo_atari, tmp, iterations=1, run_name="trained"))["checkpoint"])


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    assert len(summary["episodes"]) == 2
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
    other = {**state["provenance"], "script_sha256": "f" * 64}  # no script here has that hash either
    torch.save({**state, "script": "dqn_atari", "provenance": other}, tmp_path / "other_script.pt")
    cases = {
        "missing.pt": "does not exist",
        "empty.pt": "is empty",
        "truncated.pt": "not a loadable checkpoint",
        "foreign.pt": "not a checkpoint written by these scripts",
        "other_script.pt": "written by dqn_atari.py (sha256 ffffffffffff), which is not in",
    }
    calls = {name: [str(tmp_path / name)] for name in cases} | {"--episodes 0": [good, "--episodes", "0"]}
    cases["--episodes 0"] = "--episodes must be positive"
    with ThreadPoolExecutor() as pool:  # six processes that each import torch: at once, not one by one
        procs = dict(zip(calls, pool.map(lambda flags: run_sample(*flags, cwd=tmp_path), calls.values())))
    for name, message in cases.items():
        assert message in one_sentence_error(procs[name]), name


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
    import imageio_ffmpeg
    from huggingface_hub import ModelCard

    folder = tmp_path / "hub"
    summary = sample.play(play_args(checkpoint, tmp_path, episodes=2, env_backend="ale", hub_folder=str(folder)))
    state = torch.load(checkpoint, weights_only=True)
    name = state["script"]
    expected = ["README.md", "args.json", f"{name}.pt", f"{name}.py", "sample.py", "replay.mp4", "results.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    # the checkpoint holds what play-back needs, the weights as trained, and no optimizer or random state
    carried = torch.load(folder / f"{name}.pt", weights_only=True)
    assert carried.keys() == {
        "script",
        "args",
        "iteration",
        "global_step",
        "num_actions",
        "model",
        "best_eval",
        "provenance",
    }
    assert carried["model"].keys() == state["model"].keys()
    assert all(torch.equal(carried["model"][k], v) for k, v in state["model"].items())
    assert carried["args"] == state["args"] and carried["provenance"] == state["provenance"]
    # the scripts: the one that trained it (the sha256 its checkpoint records) and sample.py
    assert sha256(folder / f"{name}.py") == state["provenance"]["script_sha256"]
    assert (folder / "sample.py").read_bytes() == (ROOT / "sample.py").read_bytes()
    # game 1's video: an MP4 of its every frame (the first screen, then one per step)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(folder / "replay.mp4"))
    assert frames == summary["episodes"][0]["length"] + 1 and seconds > 0
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


def narrower_copy(path, monkeypatch):
    """ppo_atari.py copied to `path` with 256 hidden units instead of 512, imported under the copy's name."""
    source = (ROOT / "ppo_atari.py").read_text()
    narrower = source.replace("nn.Linear(64 * 7 * 7, 512)", "nn.Linear(64 * 7 * 7, 256)")
    narrower = narrower.replace("nn.Linear(512, ", "nn.Linear(256, ")
    assert narrower.count("256") == source.count("256") + 3  # the hidden layer and both heads
    path.write_text(narrower)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)  # before it runs: its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_a_copied_script_plays_with_itself_by_name_or_sha256_and_a_misfit_is_one_sentence(tmp_path, monkeypatch):
    experiment = tmp_path / "experiment"  # the copy beside the original, as a new user makes it
    experiment.mkdir()
    shutil.copy(ROOT / "ppo_atari.py", experiment / "ppo_atari.py")
    my_ppo = narrower_copy(experiment / "my_ppo.py", monkeypatch)
    settings = dict(TINY["ppo_atari"], cuda=False, log_interval=1e9, eval_every=0, total_timesteps=32)
    run = my_ppo.train(my_ppo.Args(**settings, runs_dir=str(experiment / "runs"), run_name="mine"))
    latest = Path(run["checkpoint"])
    state = torch.load(latest, weights_only=True)
    assert state["provenance"]["script_sha256"] == sha256(experiment / "my_ppo.py")
    # by name in the checkpoint's folders (sample.py lives elsewhere)
    assert sample.play(play_args(latest, tmp_path))["played_with"]["file"] == "my_ppo.py"
    # by sha256 beside sample.py: a checkpoint naming ppo_atari, whose ppo_atari.py is another network
    torch.save({**state, "script": "ppo_atari"}, tmp_path / "misnamed.pt")
    monkeypatch.setattr(sample, "HERE", experiment)
    played = sample.play(play_args(tmp_path / "misnamed.pt", tmp_path))["played_with"]
    assert played == {"file": "my_ppo.py", "sha256": sha256(experiment / "my_ppo.py")}
    # only ppo_atari.py at hand: the first weight that does not fit, in one sentence
    monkeypatch.setattr(sample, "HERE", ROOT)
    misfit = (
        r"the checkpoint's network\.7\.weight has shape \(256, 3136\) but ppo_atari\.py's network has \(512, 3136\)"
    )
    with pytest.raises(sample.SampleError, match=misfit):
        sample.play(play_args(tmp_path / "misnamed.pt", tmp_path))
    # no script by that name or hash anywhere: one sentence that says what was looked for
    shutil.copy(latest, tmp_path / "alone.pt")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sample, "HERE", tmp_path / "empty")
    with pytest.raises(sample.SampleError, match=r"written by my_ppo\.py \(sha256 [0-9a-f]{12}\), which is not in"):
        sample.play(play_args(tmp_path / "alone.pt", tmp_path))


def test_the_script_that_trained_a_checkpoint_is_the_last_one_that_wrote_it(ppo_checkpoint, tmp_path, capsys):
    state = torch.load(ppo_checkpoint, weights_only=True)
    here, other = sha256(ROOT / "ppo_atari.py"), "0" * 64

    def played_with(start, *resumes):  # resumes as the harness records them: what differs from the start
        record = {**state["provenance"], "script_sha256": start, "resumes": [{"changed": c} for c in resumes]}
        torch.save({**state, "provenance": record}, tmp_path / "resumed.pt")
        capsys.readouterr()
        sample.play(play_args(tmp_path / "resumed.pt", tmp_path))
        return capsys.readouterr()

    out, err = played_with(other, {"script_sha256": here})  # started with other code, resumed with this file
    assert "warning" not in err and f"sha256 {here[:12]}, the script that last wrote this checkpoint" in out
    out, err = played_with(here, {"script_sha256": other})  # started with this file, resumed with other code
    assert f"last written by ppo_atari.py sha256 {other[:12]}" in err
    out, err = played_with(here, {"script_sha256": other}, {})  # ... and resumed again with the start's code
    assert "warning" not in err and "the script that last wrote this checkpoint" in out


def test_the_cards_training_command_names_the_network_an_older_checkpoint_was_made_with():
    import a2c_lstm_atari

    saved = dataclasses.asdict(a2c_lstm_atari.Args())
    assert sample.command_line(a2c_lstm_atari, saved) == "python a2c_lstm_atari.py"
    del saved["lstm_skip"]  # a checkpoint from before --lstm-skip existed: made without the skip connection
    assert sample.command_line(a2c_lstm_atari, saved) == "python a2c_lstm_atari.py --no-lstm-skip"


def test_the_hub_folder_alone_plays_back_with_its_cards_command(ppo_checkpoint, tmp_path):
    hub = tmp_path / "hub"
    summary = sample.play(play_args(ppo_checkpoint, tmp_path, env_backend="ale", greedy=True, hub_folder=str(hub)))
    download = tmp_path / "download"  # what a download from the Hub holds: the folder's files, no repository
    shutil.copytree(hub, download)
    card = (download / "README.md").read_text()
    command = card.split("## Play it back")[1].strip().splitlines()[0].strip()
    words = shlex.split(command)
    assert words[:2] == ["python", "sample.py"] and "--max-episode-frames" in words  # the protocol it measured
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, *words[1:], "--json", "replayed.json"],
        cwd=download,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "the script that last wrote this checkpoint" in proc.stdout
    replayed = json.loads((download / "replayed.json").read_text())
    assert replayed["played_with"]["file"] == "ppo_atari.py" and replayed["checkpoint"] == "ppo_atari.pt"
    assert (download / "videos" / "episode_000.mp4").stat().st_size > 0
    if not torch.cuda.is_available():  # on the CPU, as the folder was made: the same game
        assert [e["return"] for e in replayed["episodes"]] == [e["return"] for e in summary["episodes"]]
    assert "is the script that trained it" in card
    # a checkpoint whose training script is not at hand: the card says so plainly
    state = torch.load(ppo_checkpoint, weights_only=True)
    record = {**state["provenance"], "script_sha256": "0" * 64, "resumes": []}
    torch.save({**state, "provenance": record}, tmp_path / "elsewhere.pt")
    sample.play(play_args(tmp_path / "elsewhere.pt", tmp_path, env_backend="ale", hub_folder=str(tmp_path / "h2")))
    assert (
        f"The script that trained it (sha256 `{'0' * 64}`, as its checkpoint records) is not at hand"
        in (tmp_path / "h2" / "README.md").read_text()
    )


def test_the_hub_folder_keeps_the_videos_asked_for_and_its_card_says_how_the_games_were_played(
    ppo_checkpoint, tmp_path, capsys
):
    hub = tmp_path / "hub"
    args = play_args(ppo_checkpoint, tmp_path, episodes=2, env_backend="ale", hub_folder=str(hub))
    summary = sample.play(dataclasses.replace(args, save_video=str(hub / "videos")))
    assert sorted(p.name for p in (hub / "videos").iterdir()) == ["episode_000.mp4", "episode_001.mp4"]
    # each game's line: its video's length, and apart from it the wall time the game took
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("game ")]
    assert len(lines) == 2
    for line, episode in zip(lines, summary["episodes"], strict=True):
        seconds = f"{(episode['length'] + 1) / 15:.0f}"  # one frame per agent step (frame skip 4) at 60 Hz
        assert re.search(rf"\({seconds} s of video, played in \d+ s\)$", line), line
    card = (hub / "README.md").read_text()
    assert "FIRE pressed on the step after each lost life" in card
    assert "played here on" not in card
    # another game than the one trained on (the same four actions): the card says so
    other = tmp_path / "other"
    sample.play(play_args(ppo_checkpoint, tmp_path, env_backend="ale", env_id="Atlantis-v5", hub_folder=str(other)))
    card = (other / "README.md").read_text()
    assert "It was trained on Breakout-v5 and is played here on Atlantis-v5" in card
    assert not (other / "videos").exists()  # the card's video is made aside: only replay.mp4 is left
