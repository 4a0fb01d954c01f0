"""Records that must be right: best.pt across resumes, a fresh start's provenance, a copied script's
own name, a checkpoint that does not fit, and the line a run ends on."""

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_args


def scripted(script, monkeypatch, means, on_call=None):
    """Evaluations that score `means` in turn, whatever the agent."""
    means = iter(means)

    def evaluate(*args, **kwargs):
        if on_call is not None:
            on_call()
        return np.full(2, float(next(means)))

    monkeypatch.setattr(script, "evaluate", evaluate)


def load(path):
    return torch.load(path, weights_only=True)


def test_a_resume_from_an_older_checkpoint_takes_best_pt_back_to_the_best_before_it(script, tmp_path, monkeypatch):
    args = tiny_args(script, tmp_path, iterations=4, run_name="run", checkpoint_every=1)
    batch = args.num_envs * args.num_steps
    args.eval_every = batch
    scripted(script, monkeypatch, [1.0, 2.0, 9.0, 3.0])
    script.train(args)
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert os.path.samefile(folder / "best.pt", folder / "iter_000003.pt")

    # Back to iteration 2: the 9.0 agent's branch is abandoned; the best of what survives is iteration 2's 2.0.
    scripted(script, monkeypatch, [1.5, 1.8])
    resume = tiny_args(
        script, tmp_path, iterations=4, run_name="run", checkpoint_every=1, resume=str(folder / "iter_000002.pt")
    )
    resume.eval_every = batch
    script.train(resume)
    best, latest = load(folder / "best.pt"), load(folder / "latest.pt")
    assert best["iteration"] == 2 and best["best_eval"] == latest["best_eval"]
    assert best["best_eval"]["mean"] == 2.0 and os.path.samefile(folder / "best.pt", folder / "iter_000002.pt")


def test_best_pt_whose_periodic_file_was_pruned_survives_a_resume_after_it(tmp_path, monkeypatch):
    import a2c_atari as script

    args = tiny_args(script, tmp_path, iterations=4, run_name="run", checkpoint_every=1, keep_checkpoints=1)
    args.eval_every = args.num_envs * args.num_steps
    scripted(script, monkeypatch, [4.0, 9.0, 1.0, 1.0])
    script.train(args)
    folder = tmp_path / "runs" / "run" / "checkpoints"
    assert not (folder / "iter_000002.pt").exists() and load(folder / "best.pt")["iteration"] == 2
    scripted(script, monkeypatch, [3.0])  # iteration 4 again, from iteration 3: no better
    resume = tiny_args(script, tmp_path, iterations=4, run_name="run", resume=str(folder / "iter_000003.pt"))
    resume.eval_every = args.eval_every
    script.train(resume)
    assert load(folder / "best.pt")["iteration"] == 2 and load(folder / "latest.pt")["best_eval"]["mean"] == 9.0


def test_a_resume_into_a_new_folder_starts_its_own_best(script, tmp_path, monkeypatch):
    args = tiny_args(script, tmp_path, iterations=2, run_name="first")
    args.eval_every = args.num_envs * args.num_steps
    scripted(script, monkeypatch, [9.0, 8.0])
    script.train(args)
    outside = tmp_path / "hub" / "model.pt"  # a checkpoint outside a checkpoints/ folder, as the Hub folder's
    outside.parent.mkdir()
    shutil.copyfile(tmp_path / "runs" / "first" / "checkpoints" / "latest.pt", outside)
    scripted(script, monkeypatch, [1.0, 2.0])
    resume = tiny_args(script, tmp_path, iterations=4, run_name="second", resume=str(outside))
    resume.eval_every = args.eval_every
    script.train(resume)
    best = load(tmp_path / "runs" / "second" / "checkpoints" / "best.pt")
    assert best["iteration"] == 4 and best["best_eval"]["mean"] == 2.0


def test_a_fresh_start_after_an_attempt_without_checkpoints_records_a_start_not_a_resume(script, tmp_path):
    run_dir = tmp_path / "runs" / "again"
    run_dir.mkdir(parents=True)
    crashed = {"time": "2000-01-01 00:00:00", "script": "x.py", "script_sha256": "0" * 64, "resumes": []}
    (run_dir / "provenance.json").write_text(json.dumps(crashed))
    script.train(tiny_args(script, tmp_path, iterations=1, run_name="again"))
    record = json.loads((run_dir / "provenance.json").read_text())
    assert record["resumes"] == [] and record["time"] != crashed["time"]
    assert record["script"] == f"{script.SCRIPT}.py"


def copy_with_hidden(tmp_path, name, hidden):
    source = (ROOT / "ppo_atari.py").read_text()
    assert source.count("512") == 3
    path = tmp_path / f"{name}.py"
    path.write_text(source.replace("512", str(hidden)))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_copied_script_records_its_own_name_and_a_checkpoint_that_does_not_fit_is_one_sentence(tmp_path):
    import ppo_atari

    mine = copy_with_hidden(tmp_path, "my_ppo", 256)
    try:
        settings = dataclasses.asdict(tiny_args(ppo_atari, tmp_path, iterations=1))
        settings.pop("exp_name")  # the copy's own default
        out = mine.train(mine.Args(**settings))
    finally:
        del sys.modules["my_ppo"]
    state = load(out["checkpoint"])
    assert state["script"] == "my_ppo" and state["args"]["exp_name"] == "my_ppo"
    assert "__my_ppo__" in os.path.basename(out["run_dir"])
    assert (
        json.loads((tmp_path / "runs" / os.path.basename(out["run_dir"]) / "provenance.json").read_text())["script"]
        == "my_ppo.py"
    )

    with pytest.raises(ppo_atari.UsageError, match=r"was written by my_ppo\.py, not ppo_atari\.py\.$"):
        ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=2, resume=out["checkpoint"]))

    state["script"] = "ppo_atari"  # a checkpoint that claims the script but holds another network
    claimed = tmp_path / "claimed.pt"
    torch.save(state, claimed)
    with pytest.raises(
        ppo_atari.UsageError,
        match=r"does not fit ppo_atari\.py's network: network\.7\.weight is "
        r"\(256, 3136\) there, \(512, 3136\) here\.$",
    ):
        ppo_atari.train(tiny_args(ppo_atari, tmp_path, iterations=2, resume=str(claimed)))


def test_the_run_ends_on_one_line_that_says_what_it_wrote_and_how_to_go_on(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{script.SCRIPT}.py", "--num-envs", "2", "--resume", "elsewhere"])
    args = tiny_args(script, tmp_path, iterations=2, run_name="done")
    args.eval_every = args.num_envs * args.num_steps
    scripted(script, monkeypatch, [3.0, 1.0])
    out = script.train(args)
    run_dir = tmp_path / "runs" / "done"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"finished at step {out['global_step']:,}: {run_dir / 'checkpoints' / 'iter_000002.pt'}; ")
    assert f"best.pt 3.0 at step {args.num_envs * args.num_steps:,}; last evaluation 1.0 +- 0.0 | " in last
    assert f"resume: python {script.SCRIPT}.py --num-envs 2 --resume {run_dir} | " in last
    assert last.endswith(
        f"play: python sample.py {run_dir} | share: python sample.py "
        f"{run_dir / 'checkpoints' / 'best.pt'} --hub-folder {run_dir / 'hub'}"
    )


def test_an_interrupted_run_ends_on_the_same_line(tmp_path, monkeypatch, capsys):
    import ppo_atari

    args = tiny_args(ppo_atari, tmp_path, iterations=5, run_name="stopped")
    args.eval_every = args.num_envs * args.num_steps
    scripted(ppo_atari, monkeypatch, [2.0] * 5, on_call=lambda: os.kill(os.getpid(), signal.SIGINT))
    out = ppo_atari.train(args)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert out["interrupted"] and last.startswith(f"stopped at step {out['global_step']:,}: {out['checkpoint']}; ")
    assert "resume: python ppo_atari.py" in last


def test_a_play_back_checkpoint_without_optimizer_is_refused_as_a_resume_in_one_sentence(script, tmp_path):
    out = script.train(tiny_args(script, tmp_path, iterations=1, run_name="full"))
    state = load(out["checkpoint"])
    slim = tmp_path / "hub" / f"{script.SCRIPT}.pt"  # what sample.py --hub-folder keeps: no optimizer, no RNG
    slim.parent.mkdir()
    torch.save({k: v for k, v in state.items() if k not in ("optimizer", "rng", "rng_by_rank")}, slim)
    with pytest.raises(script.UsageError, match=r"holds what play-back needs .* not the optimizer and random state"):
        script.train(tiny_args(script, tmp_path, iterations=2, run_name="again", resume=str(slim)))
    assert not (tmp_path / "runs" / "again").exists()
