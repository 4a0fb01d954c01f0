"""best.pt: the checkpoint of the best evaluation so far, kept by the run and across a resume."""

import numpy as np
import torch
from conftest import tiny_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scripted(script, monkeypatch, means):
    """Evaluations that score `means` in turn, whatever the agent."""
    means = iter(means)
    monkeypatch.setattr(script, "evaluate", lambda *args, **kwargs: np.full(4, float(next(means))))


def best(run_dir):
    return torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)


def test_best_pt_follows_the_best_evaluation_and_survives_keep_checkpoints_and_a_resume(script, tmp_path, monkeypatch):
    args = tiny_args(script, tmp_path, iterations=4, run_name="best", keep_checkpoints=1, checkpoint_every=1)
    batch = args.num_envs * args.num_steps
    args.eval_every = batch  # an evaluation after every iteration; the best is the second
    scripted(script, monkeypatch, [2.0, 5.0, 3.0, 1.0])
    out = script.train(args)
    run_dir = tmp_path / "runs" / "best"
    kept = best(run_dir)
    assert kept["iteration"] == 2 and kept["best_eval"] == {
        "mean": 5.0,
        "std": 0.0,
        "games": 4,
        "global_step": 2 * batch,
    }
    assert not (run_dir / "checkpoints" / "iter_000002.pt").exists()  # pruned by --keep-checkpoints 1, best.pt kept
    latest = torch.load(out["checkpoint"], weights_only=True)
    assert latest["iteration"] == 4 and latest["best_eval"]["mean"] == 5.0
    assert any(not torch.equal(kept["model"][k], latest["model"][k]) for k in kept["model"])
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.value for e in acc.Scalars("eval/best_return")] == [2.0, 5.0, 5.0, 5.0]

    # a resume remembers the best so far: 4 does not replace it, 6 does
    resumed = tiny_args(script, tmp_path, iterations=6, run_name="best", resume=str(run_dir), eval_every=batch)
    scripted(script, monkeypatch, [4.0, 6.0])
    script.train(resumed)
    kept = best(run_dir)
    assert kept["iteration"] == 6 and kept["best_eval"]["mean"] == 6.0
