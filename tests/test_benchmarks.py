"""benchmarks/run.py resumes and skips runs of a matrix; benchmarks/report.py turns event files into
the right table and curves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402
import run  # noqa: E402

TINY_PPO = (
    "--num-envs 2 --num-steps 16 --num-minibatches 2 --update-epochs 1 --no-cuda --env-backend ale --eval-every 0"
)


def matrix(runs_dir, total_timesteps, seeds, script_args=TINY_PPO):
    return run.Args(
        scripts=["ppo_atari"],
        env_ids=["Breakout-v5"],
        seeds=seeds,
        total_timesteps=total_timesteps,
        runs_dir=str(runs_dir),
        script_args=script_args,
    )


def test_runner_resumes_an_interrupted_run_and_skips_complete_ones(tmp_path):
    runs_dir = tmp_path / "bench"
    seed1, seed2 = runs_dir / "Breakout-v5__ppo_atari__1", runs_dir / "Breakout-v5__ppo_atari__2"
    # Seed 1 stops after one iteration of a three-iteration budget: an interrupted run.
    assert run.main(matrix(runs_dir, 32, [1]))["ran"] == [seed1.name]
    assert run.status(seed1, 96) == "interrupted"
    # Seed 2 has logs of a start that died before its first checkpoint.
    with SummaryWriter(str(seed2)) as w:
        w.add_scalar("charts/episodic_return", 12345.0, 5)

    result = run.main(matrix(runs_dir, 96, [1, 2]))
    assert sorted(result["ran"]) == [seed1.name, seed2.name] and result["failed"] == []
    for folder in (seed1, seed2):
        state = torch.load(folder / "checkpoints" / "latest.pt", weights_only=True)
        assert (state["iteration"], state["global_step"]) == (3, 96)
    # Seed 1 continued from its checkpoint (its first checkpoint is still there); seed 2 started over.
    assert sorted(p.name for p in (seed1 / "checkpoints").glob("iter_*")) == ["iter_000001.pt", "iter_000003.pt"]
    assert sorted(p.name for p in (seed2 / "checkpoints").glob("iter_*")) == ["iter_000003.pt"]
    assert len(list(seed2.glob("stale_*/events.out.tfevents*"))) == 1  # set aside, not deleted
    meta = json.loads((seed1 / "benchmark.json").read_text())
    assert meta["script"] == "ppo_atari" and meta["hardware"].startswith("CPU only")

    mtimes = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.pt")}
    again = run.main(matrix(runs_dir, 96, [1, 2]))
    assert sorted(again["skipped"]) == [seed1.name, seed2.name] and again["ran"] == []
    assert {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*.pt")} == mtimes


def test_runner_says_a_run_stopped_short_of_its_budget_is_stopped_not_failed(tmp_path, capsys):
    # a run that exits 0 with its checkpoint short of the budget (as after SIGTERM; here a shorter budget)
    stopped = run.main(matrix(tmp_path / "bench", 96, [1], script_args=TINY_PPO + " --total-timesteps 32"))
    assert stopped["stopped"] == ["Breakout-v5__ppo_atari__1"] and stopped["failed"] == stopped["ran"] == []
    assert (
        "Breakout-v5__ppo_atari__1: stopped short of its budget (the same command resumes it)"
        in capsys.readouterr().out
    )
    assert run.main(matrix(tmp_path / "bench", 96, [1]))["ran"] == ["Breakout-v5__ppo_atari__1"]


def test_runner_reports_a_failed_run(tmp_path):
    result = run.main(matrix(tmp_path / "bench", 32, [1], script_args=TINY_PPO + " --clip-coef -1"))
    assert result["ran"] == [] and result["failed"] == ["Breakout-v5__ppo_atari__1"]
    log = (tmp_path / "bench" / "Breakout-v5__ppo_atari__1" / "stdout.log").read_text()
    assert "--clip-coef must not be negative" in log


def synthetic_run(runs_dir, name, returns, sps, last_step, meta=None, args=None):
    folder = runs_dir / name
    folder.mkdir(parents=True)
    if meta is not None:
        (folder / "benchmark.json").write_text(json.dumps(meta))
    if args is not None:
        (folder / "args.json").write_text(json.dumps(args))
    with SummaryWriter(str(folder)) as w:
        for i, value in enumerate(returns):
            w.add_scalar("charts/episodic_return", value, (i + 1) * last_step // len(returns))
        w.add_scalar("charts/SPS", sps, last_step)


def test_report_gives_mean_and_std_over_seeds_and_writes_the_curves(tmp_path):
    from PIL import Image

    runs_dir = tmp_path / "bench"
    for seed, final in [(1, 10.0), (2, 20.0)]:
        meta = {
            "script": "ppo_atari",
            "env_id": "Breakout-v5",
            "seed": seed,
            "total_timesteps": 10_000_000,
            "hardware": "test machine",
        }
        # 50 early games that the final figure must ignore, then the last 100 games.
        synthetic_run(
            runs_dir,
            f"Breakout-v5__ppo_atari__{seed}",
            [0.0] * 50 + [final] * 100,
            sps=1000.0 * seed,
            last_step=10_000_000,
            meta=meta,
        )
    synthetic_run(
        runs_dir,
        "Pong-v5__a2c_atari__1",
        [-21.0, -19.0, -20.0],
        sps=500.0,
        last_step=50_000,
        args={"exp_name": "a2c_atari", "env_id": "Pong-v5", "seed": 1, "total_timesteps": 50_000},
    )

    out = tmp_path / "report"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out)))
    figures = json.loads((out / "report.json").read_text())
    breakout = figures["ppo_atari/Breakout"]
    assert breakout["finals"] == [10.0, 20.0]
    assert breakout["mean"] == pytest.approx(15.0) and breakout["std"] == pytest.approx(5.0)
    assert breakout["sps"] == pytest.approx(1500.0) and breakout["steps"] == 10_000_000
    assert figures["a2c_atari/Pong"]["mean"] == pytest.approx(-20.0)

    text = (out / "report.md").read_text()
    assert "Hardware: test machine." in text
    assert "| ppo_atari | 10M steps | 2 | 15.0 +- 5.0 | 10.0, 20.0 | baselines ppo2 239.9 | 1,500 |" in text
    assert "| a2c_atari | 50,000 steps (short run: not comparable with 10M references) | 1 | -20.0 +- 0.0 |" in text
    assert "| CleanRL ppo_atari | 10M steps | 414.66 +- 28.09 |" in text  # the reference, with its source
    assert "CleanRL ppo_atari, final at 10M steps" in figures["plots"]["Breakout"]["labels"]  # a 10M run: drawn
    for game in ("Breakout", "Pong"):
        with Image.open(out / f"{game}.png") as png:
            assert png.format == "PNG" and png.size[0] > 300


def test_a_short_run_is_drawn_and_tabled_beside_the_published_curves_at_its_budget(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed in (1, 2):
        synthetic_run(
            runs_dir,
            f"Breakout-v5__ppo_atari__{seed}",
            [2.0] * 100 + [21.0] * 100,
            sps=500.0,
            last_step=1_000_000,
            meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": seed},
        )
    synthetic_run(
        runs_dir,
        "Breakout-v5__a2c_atari__1",
        [1.0] * 100 + [8.0] * 100,
        sps=900.0,
        last_step=3_000_000,
        meta={"script": "a2c_atari", "env_id": "Breakout-v5", "seed": 1},
    )
    synthetic_run(
        runs_dir,
        "Breakout-v5__a2c_lstm_atari__1",
        [1.5] * 50,
        sps=900.0,
        last_step=250_000,
        meta={"script": "a2c_lstm_atari", "env_id": "Breakout-v5", "seed": 1},
    )
    out = tmp_path / "report"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), last_episodes=20))

    text = (out / "report.md").read_text()
    # each run beside its algorithm's published return at its own budget (read off a curve, interpolated)
    assert (
        "| ppo_atari | 1M steps (short run: not comparable with 10M references) | 2 | 21.0 +- 0.0 | 21.0, 21.0 | baselines ppo2 22.0 |"
        in text
    )
    assert (
        "| a2c_atari | 3M steps (short run: not comparable with 10M references) | 1 | 8.0 +- 0.0 | 8.0 | baselines a2c 49.3; SB3 zoo A2C 7.3 |"
        in text
    )
    assert (
        "| a2c_lstm_atari | 0.25M steps (short run: not comparable with 10M references) | 1 | 1.5 +- 0.0 | 1.5 | none (published from 0.5M steps) |"
        in text
    )
    plot = json.loads((out / "report.json").read_text())["plots"]["Breakout"]
    assert plot["x_max"] == 3_000_000
    assert plot["y_range"][1] < 120  # scaled to the curves up to 3M (ppo2 97.1 there), not to the 10M finals
    assert plot["labels"] == [
        "a2c_atari (1 seed)",
        "a2c_lstm_atari (1 seed)",
        "ppo_atari (2 seeds)",
        "baselines ppo2 (published, approximate)",
        "baselines a2c (published, approximate)",
        "SB3 zoo A2C (published)",
    ]
    assert plot["legend_clear_of_axes"]


def test_report_reads_each_seed_along_the_way_at_the_steps_asked(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed, before, after in [(1, 3.0, 9.0), (2, 5.0, 11.0)]:  # 100 games over 5M steps: 60 by 3M, 40 after
        synthetic_run(
            runs_dir,
            f"Breakout-v5__a2c_lstm_atari__{seed}",
            [before] * 60 + [after] * 40,
            sps=900.0,
            last_step=5_000_000,
            meta={"script": "a2c_lstm_atari", "env_id": "Breakout-v5", "seed": seed},
        )
    out = tmp_path / "out"
    report.write_report(
        report.Args(runs_dir=str(runs_dir), out_dir=str(out), last_episodes=20, at_steps=[10_000, 3_000_000, 6_000_000])
    )
    row = json.loads((out / "report.json").read_text())["a2c_lstm_atari/Breakout"]
    assert row["finals"] == [9.0, 11.0]
    # the games finished by 3M; none had finished by 10k and 6M was never reached: both left out
    assert row["along"] == {"3000000": [3.0, 5.0]}
    text = (out / "report.md").read_text()
    assert "nan" not in text
    assert "| a2c_lstm_atari | 3M steps | 3.0, 5.0 | 4.0 | baselines a2c 49.3; SB3 zoo A2C 7.3 |" in text
    with pytest.raises(SystemExit, match="--at-steps takes positive agent steps, got \\[0\\]"):
        report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), at_steps=[0]))


def test_runs_of_one_script_with_different_flags_are_rows_of_their_own(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed, flags, final in [(1, "", 4.0), (2, "", 6.0), (1, "--autocast bf16", 5.0)]:
        synthetic_run(
            runs_dir,
            f"Breakout-v5__ppo_atari__{seed}{flags.replace(' ', '')}",
            [final] * 30,
            sps=500.0,
            last_step=500_000,
            meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": seed, "script_args": flags},
        )
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "out"), last_episodes=20))
    text = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| ppo_atari | 0.5M steps (short run: not comparable with 10M references) | 2 | 5.0 +- 1.0 | 4.0, 6.0 | baselines ppo2 13.3 |"
        in text
    )
    assert (
        "| ppo_atari --autocast bf16 | 0.5M steps (short run: not comparable with 10M references) | 1 | 5.0 +- 0.0 | 5.0 | baselines ppo2 13.3 |"
        in text
    )


def test_report_without_runs_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no runs with logged games"):
        report.write_report(report.Args(runs_dir=str(tmp_path / "empty"), out_dir=str(tmp_path / "out")))


def test_runner_refuses_an_unknown_game_or_script_before_running_anything(tmp_path):
    with pytest.raises(SystemExit, match="'Pongg-v5' is not an Atari game"):
        run.main(run.Args(env_ids=["Pongg-v5"], runs_dir=str(tmp_path / "bench")))
    with pytest.raises(SystemExit, match="no such script .*: dqn_atari"):
        run.main(run.Args(scripts=["dqn_atari"], runs_dir=str(tmp_path / "bench")))
    assert not (tmp_path / "bench").exists()


def test_runner_launches_each_run_under_torchrun_when_asked(tmp_path, capsys):
    run.main(run.Args(scripts=["ppo_atari"], seeds=[1], runs_dir=str(tmp_path / "bench"), dry_run=True))
    (alone,) = [l for l in capsys.readouterr().out.splitlines() if l.startswith("run ")]
    run.main(
        run.Args(scripts=["ppo_atari"], seeds=[1], runs_dir=str(tmp_path / "bench"), dry_run=True, nproc_per_node=2)
    )
    (spread,) = [l for l in capsys.readouterr().out.splitlines() if l.startswith("run ")]
    launcher = " -m torch.distributed.run --standalone --nproc-per-node=2"
    assert launcher in spread and spread.replace(launcher, "") == alone  # the same run, its flags unchanged


def test_device_check_on_a_machine_without_a_gpu_says_so_and_exits_zero():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0 and "needs a CUDA GPU" in proc.stdout


def test_iqm_and_its_bootstrap_interval_on_small_tables():
    assert report.iqm([7, 1, 400, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # the middle half: 3, 4, 5, 6
    assert report.iqm([1.0, 2.0, 30.0]) == pytest.approx(11.0)  # a quarter of 3 rounds down to none cut
    # two seeds 0 and 10: a resample's IQM (its mean) is 0, 5 or 10 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5th and 97.5th percentiles of 2,000 resamples are 0 and 10
    assert report.bootstrap_interval([[0.0, 10.0]]) == (0.0, 10.0)
    assert report.bootstrap_interval([[3.0, 3.0, 3.0]]) == (3.0, 3.0)
    low, high = report.bootstrap_interval([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])  # stratified by game
    assert low < report.iqm([1, 2, 3, 4, 10, 20, 30, 40]) < high and 1.0 <= low and high <= 40.0
    # each game's seeds are resampled within that game: every resample of these is 0, 0, 100, 100 (IQM 50),
    # where resampling the pooled finals would draw 0 or 100 four times
    assert report.bootstrap_interval([[0.0, 0.0], [100.0, 100.0]]) == (50.0, 50.0)


def test_seeds_of_different_code_are_separate_rows_with_a_note_and_the_hardware_is_the_runs(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed, sha, final in [(1, "a" * 64, 4.0), (2, "a" * 64, 6.0), (3, "b" * 64, 50.0)]:
        name = f"Breakout-v5__ppo_atari__{seed}"
        synthetic_run(
            runs_dir,
            name,
            [final] * 30,
            sps=500.0,
            last_step=500_000,
            meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": seed, "hardware": "drawing box"},
        )
        (runs_dir / name / "provenance.json").write_text(
            json.dumps(
                {
                    "script_sha256": sha,
                    "packages": {"torch": "2.13.0"},
                    "machines": [{"cpu": "Test CPU", "cores": 2, "gpus": ["Test GPU"]}],
                }
            )
        )
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "out"), last_episodes=20))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Hardware: Test CPU (2 cores), Test GPU." in text
    assert "different code or torch versions" in text
    assert "| ppo_atari [code aaaaaaaa, torch 2.13.0] | 0.5M steps" in text and "| 2 | 5.0 +- 1.0 |" in text
    assert "| ppo_atari [code bbbbbbbb, torch 2.13.0] | 0.5M steps" in text and "| 1 | 50.0 +- 0.0 |" in text
    assert "| 5.0 [4.0, 6.0] | aaaaaaaa, torch 2.13.0 |" in text


def test_a_run_resumed_with_other_code_or_torch_names_each_in_its_row(tmp_path):
    runs_dir, name = tmp_path / "bench", "Breakout-v5__a2c_lstm_atari__2"
    meta = {"script": "a2c_lstm_atari", "env_id": "Breakout-v5", "seed": 2}
    synthetic_run(runs_dir, name, [9.0] * 30, sps=500.0, last_step=500_000, meta=meta)
    resumes = [  # as the harness writes them: each resume lists what differs from the run's start
        {"command": "a", "changed": {"script_sha256": "b" * 64}},
        {"command": "b", "changed": {"script_sha256": "b" * 64, "packages": {"torch": "2.14.0"}}},
        {"command": "c", "changed": {}},  # back to the code and torch it started with
        {"command": "d", "changed": {}},
    ]
    provenance = {"script_sha256": "a" * 64, "packages": {"torch": "2.13.0"}, "resumes": resumes}
    (runs_dir / name / "provenance.json").write_text(json.dumps(provenance))
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "out"), last_episodes=20))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| aaaaaaaa then bbbbbbbb then aaaaaaaa, torch 2.13.0 then 2.14.0 then 2.13.0 |" in text


def test_the_wall_time_of_a_resumed_run_leaves_out_the_time_it_lay_stopped(tmp_path):
    folder = tmp_path / "bench" / "Breakout-v5__ppo_atari__1"
    folder.mkdir(parents=True)
    (folder / "benchmark.json").write_text(json.dumps({"script": "ppo_atari", "env_id": "Breakout-v5", "seed": 1}))
    # the first process logs from t=1000 to 1100 s; the run lies stopped; a resume starts at 5000, logs 5010-5110
    for start, times in [(900, [1000.0, 1100.0]), (5000, [5010.0, 5110.0])]:
        with SummaryWriter(str(folder), filename_suffix=f".{start}") as w:
            for i, t in enumerate(times):
                w.add_scalar("charts/episodic_return", 1.0, start + i, walltime=t)
        (written,) = folder.glob(f"events.out.tfevents.*.{start}")
        written.rename(folder / f"events.out.tfevents.{start}.host.{start}")  # the name holds the process's start
    assert report.read_run(folder)["wall_s"] == pytest.approx(100.0 + 110.0)  # not 4110: the stop is left out


def test_two_games_give_a_human_normalised_iqm_with_its_interval_and_a_performance_profile(tmp_path):
    runs_dir = tmp_path / "bench"
    for game, finals in [("Breakout", [1.7, 30.5, 16.1]), ("Pong", [-20.7, 14.6, -3.05])]:
        for seed, final in enumerate(finals, start=1):
            synthetic_run(
                runs_dir,
                f"{game}-v5__ppo_atari__{seed}",
                [final] * 30,
                sps=500.0,
                last_step=500_000,
                meta={"script": "ppo_atari", "env_id": f"{game}-v5", "seed": seed},
            )
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), last_episodes=20))
    aggregate = json.loads((out / "report.json").read_text())["aggregate"]["ppo_atari"]
    # random and human are 1.7 / 30.5 (Breakout) and -20.7 / 14.6 (Pong): each game's seeds normalise to 0, 1, 0.5
    assert aggregate["games"] == ["Breakout", "Pong"]
    assert aggregate["iqm"] == pytest.approx(0.5)  # six runs 0, 0, 0.5, 0.5, 1, 1: the middle four's mean
    assert aggregate["median"] == pytest.approx(0.5) and aggregate["mean"] == pytest.approx(0.5)
    low, high = aggregate["iqm_interval"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert (out / "performance_profile.png").is_file()
    # above tau = 0.5 is one run of each game's three (0, 0.5, 1); with a game of 2 runs it still weighs a half
    assert report.performance_profile({"Breakout": [0, 0.5, 1], "Pong": [0, 0.5, 1]}, [-0.1, 0.5, 1]) == [1, 1 / 3, 0]
    assert report.performance_profile({"Breakout": [0, 1], "Pong": [0, 0, 0, 1]}, [0.5]) == [0.375]
    assert "## Across games, human-normalised" in (out / "report.md").read_text()


def test_grad_norms_summarises_each_part_and_the_clip_by_phase(tmp_path):
    import grad_norms

    run_dir = tmp_path / "runs" / "lstm"
    writer = SummaryWriter(str(run_dir))
    for update in range(10):  # parts 0.2, 0, 0.3, 0.6 times (update + 1) / 10: the whole is 0.07 * (update + 1)
        scale = (update + 1) / 10
        for part, norm in [("conv", 0.2), ("lstm", 0.0), ("actor", 0.3), ("critic", 0.6)]:
            writer.add_scalar(f"losses/grad_norm_{part}", norm * scale, update * 100)
        writer.add_scalar("losses/entropy", 1.0 + update, update * 100)
    writer.close()
    first, second = grad_norms.summarise(str(run_dir), [0, 500, 1000], max_grad_norm=0.26)
    assert (first["updates"], second["updates"]) == (5, 5)
    assert first["conv"] == pytest.approx(0.06) and first["whole"] == pytest.approx(0.21)  # medians of updates 0-4
    assert first["clipped"] == pytest.approx(0.4) and second["clipped"] == 1.0  # 0.28 and 0.35 exceed 0.26
    assert first["actor_over_critic"] == pytest.approx(0.5) and second["entropy"] == pytest.approx(8.0)


def test_monitor_curve_orders_every_envs_games_by_their_end_and_counts_their_frames(tmp_path):
    import monitor_curve

    header = '#{"t_start": 0, "env_id": "BreakoutNoFrameskip-v4"}\nr,l,t\n'
    # env 0's games end at 1, 5 and 6 s; env 1's at 2 and 3 s. Lengths in frames, 4 frames a step.
    (tmp_path / "0.monitor.csv").write_text(header + "10,400,1.0\n30,400,5.0\n50,400,6.0\n")
    (tmp_path / "1.monitor.csv").write_text(header + "0,200,2.0\n20,200,3.0\n")
    # in end order: 10 (100 steps so far), 0 (150), 20 (200), 30 (300), 50 (400)
    got = monitor_curve.curve(str(tmp_path), [50, 150, 300, 1000], last_games=2)
    assert got == {"steps": [50, 150, 300, 1000], "returns": [None, 5.0, 25.0, 40.0], "games": 5}


def test_a_published_value_between_a_curves_points_is_marked_interpolated():
    curves = [
        {"name": "ref a2c", "algorithm": "a2c", "points": {"steps": [5_000_000, 10_000_000], "returns": [100.0, 300.0]}}
    ]
    assert report.published_at(curves, "a2c_atari", 5_000_000) == "ref a2c 100.0"
    assert report.published_at(curves, "a2c_atari", 9_999_360) == "ref a2c 300.0"  # a run's end, 640 steps short
    assert report.published_at(curves, "a2c_atari", 6_000_000) == "ref a2c 140.0 (interpolated)"


def normalised_runs(runs_dir, script, scores_by_game):
    """Synthetic runs whose finals human-normalise to the given scores (Breakout 1.7 / 30.5, Pong -20.7 / 14.6)."""
    anchors = {"Breakout": (1.7, 30.5), "Pong": (-20.7, 14.6)}
    for game, scores in scores_by_game.items():
        random_score, human = anchors[game]
        for seed, score in enumerate(scores, start=1):
            synthetic_run(
                runs_dir,
                f"{game}-v5__{script}__{seed}",
                [random_score + score * (human - random_score)] * 30,
                sps=500.0,
                last_step=500_000,
                meta={"script": script, "env_id": f"{game}-v5", "seed": seed},
            )


def test_the_aggregate_median_and_mean_are_rliables_over_the_games_means(tmp_path):
    # rliable: median and mean over games of each game's mean over runs; A = [0, 0, 0], B = [1, 1, 10]
    # have game means 0 and 4, so both are 2.0 (the median of the six runs pooled would be 0.5)
    normalised_runs(tmp_path / "bench", "ppo_atari", {"Breakout": [0.0, 0.0, 0.0], "Pong": [1.0, 1.0, 10.0]})
    # games weigh equally whatever their seed counts: means 0 and 1 give 0.5 (the pooled mean would be 0.25)
    normalised_runs(tmp_path / "bench", "a2c_atari", {"Breakout": [0.0, 0.0, 0.0], "Pong": [1.0]})
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(tmp_path / "bench"), out_dir=str(out), last_episodes=20))
    ppo, a2c = (json.loads((out / "report.json").read_text())["aggregate"][s] for s in ("ppo_atari", "a2c_atari"))
    assert ppo["median"] == pytest.approx(2.0) and ppo["mean"] == pytest.approx(2.0)
    assert ppo["iqm"] == pytest.approx(0.5)  # the IQM stays over all six runs: 0, 0, 1, 1
    assert a2c["median"] == pytest.approx(0.5) and a2c["mean"] == pytest.approx(0.5)
    assert "| ppo_atari | Breakout, Pong | 6 | 0.50 [" in (out / "report.md").read_text()
    assert "| 2.00 | 2.00 |" in (out / "report.md").read_text()


def test_seeds_with_different_budgets_are_rows_of_their_own(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed, last_step, final in [(1, 3_000_000, 4.0), (2, 3_000_000, 6.0), (3, 5_000_000, 50.0)]:
        synthetic_run(
            runs_dir,
            f"Breakout-v5__ppo_atari__{seed}",
            [final] * 30,
            sps=500.0,
            last_step=last_step,
            meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": seed},
        )
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), last_episodes=20))
    figures = json.loads((out / "report.json").read_text())
    assert figures["ppo_atari [3M steps]/Breakout"]["finals"] == [4.0, 6.0]
    assert figures["ppo_atari [5M steps]/Breakout"]["finals"] == [50.0]
    assert figures["ppo_atari [5M steps]/Breakout"]["steps"] == 5_000_000
    text = (out / "report.md").read_text()
    short = "(short run: not comparable with 10M references)"
    assert f"| ppo_atari [3M steps] | 3M steps {short} | 2 | 5.0 +- 1.0 |" in text
    assert f"| ppo_atari [5M steps] | 5M steps {short} | 1 | 50.0 +- 0.0 |" in text
    assert "different budgets" in text


def test_report_sets_a_played_agent_beside_its_runs_training_return_there_and_times_the_evaluations(tmp_path, capsys):
    """A checkpoint of a run, played by sample.py, is a row of its own: its whole-game scores, and the run's
    training return at the checkpoint's step (not at the run's end); the run's printed periodic evaluations
    give their cost. The agent, the JSON and the printed lines are the real scripts'."""
    from conftest import tiny_args

    import ppo_atari
    import sample

    trained = ppo_atari.train(
        tiny_args(
            ppo_atari, tmp_path, iterations=2, run_name="tiny", eval_every=32, eval_episodes=2, max_episode_frames=400
        )
    )
    printed = capsys.readouterr().out
    assert trained["global_step"] == 64 and printed.count("eval at step") == 2
    runs_dir = tmp_path / "bench"
    meta = {"script": "ppo_atari", "env_id": "Breakout-v5", "seed": 1, "total_timesteps": 128}
    synthetic_run(runs_dir, "Breakout-v5__ppo_atari__1", list(range(128)), sps=100.0, last_step=128, meta=meta)
    run_dir = runs_dir / "Breakout-v5__ppo_atari__1"
    (run_dir / "stdout.log").write_text(printed + printed)  # resumed from the start: each evaluation played twice
    (run_dir / "checkpoints").mkdir()
    agent = run_dir / "checkpoints" / "iter_000002.pt"
    agent.write_bytes(Path(trained["checkpoint"]).read_bytes())
    played = tmp_path / "played.json"
    summary = sample.play(
        sample.Args(checkpoint=str(agent), episodes=3, max_episode_frames=200, cuda=False, json=str(played))
    )

    out = tmp_path / "out"
    report.write_report(
        report.Args(runs_dir=str(runs_dir), out_dir=str(out), last_episodes=4, evaluations=[str(played)])
    )
    (row,) = json.loads((out / "report.json").read_text())["evaluations"]
    assert row["run"] == "Breakout-v5__ppo_atari__1" and row["agent"] == "iter_000002.pt" and row["step"] == 64
    assert row["games"] == 3 and row["mean"] == pytest.approx(summary["mean_return"])
    assert row["training_return"] == pytest.approx(61.5)  # the games logged at steps 61-64, not the run's last
    assert "no sticky actions" in row["played"] and "up to 30 no-op starts" in row["played"]
    text = (out / "report.md").read_text()
    assert f"| Breakout-v5__ppo_atari__1 | iter_000002.pt | 64 | 3 games, {summary['mean_return']:.1f} +- " in text
    assert "| Breakout-v5__ppo_atari__1 | 2 | " in text  # the two steps' evaluations, each counted once
    means = {
        int(line.split()[3].rstrip(":")): float(line.split()[4]) for line in printed.splitlines() if "eval at" in line
    }
    best_step = max(means, key=means.get)
    cost = json.loads((out / "report.json").read_text())["ppo_atari/Breakout"]["periodic_evaluations"]
    assert cost["Breakout-v5__ppo_atari__1"]["count"] == 2 and cost["Breakout-v5__ppo_atari__1"]["last"]["step"] == 64
    assert cost["Breakout-v5__ppo_atari__1"]["best"] == {"step": best_step, "mean": means[best_step]}

    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps(dict(summary, checkpoint=str(tmp_path / "other" / "checkpoints" / "x.pt"))))
    with pytest.raises(SystemExit, match="a checkpoint of none of the runs reported"):
        report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), evaluations=[str(stranger)]))


def test_report_reads_the_late_phase_signals_at_each_point_and_counts_games_cut_at_the_frame_cap(tmp_path):
    runs_dir = tmp_path / "bench"
    name = "Breakout-v5__ppo_atari__1"
    synthetic_run(
        runs_dir,
        name,
        [1.0] * 40,
        sps=400.0,
        last_step=1_000_000,
        meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": 1},
        args={"max_episode_frames": 4_000, "frame_skip": 4},  # a cap of 1,000 agent steps
    )
    with SummaryWriter(str(runs_dir / name)) as w:
        for step in range(10_000, 1_000_001, 10_000):  # entropy 1.0 up to 500k, then 0.2; lr 1e-4 falling to 0
            w.add_scalar("losses/entropy", 1.0 if step <= 500_000 else 0.2, step)
            w.add_scalar("charts/learning_rate", 1e-4 * (1 - step / 1_000_000), step)
        for step, length in [(100_000, 400), (450_000, 1_000), (700_000, 1_200), (900_000, 999)]:
            w.add_scalar("charts/episodic_length", length, step)
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out), at_steps=[500_000, 550_000]))
    at = json.loads((out / "report.json").read_text())["ppo_atari/Breakout"]["late_phase"][name]
    assert sorted(at) == ["1000000", "500000", "550000"]  # the points asked, and the run's end
    assert at["500000"]["entropy"] == 1.0 and at["1000000"]["entropy"] == pytest.approx(0.2)
    assert at["550000"]["entropy"] == pytest.approx(0.6)  # the 100k steps up to 550k: five of each
    assert at["500000"]["learning rate"] == pytest.approx(5e-5) and at["1000000"]["learning rate"] == 0.0
    assert at["500000"]["clip fraction"] is None  # never logged
    assert (at["500000"]["longest game"], at["500000"]["games cut at the frame cap"]) == (1_000, 1)
    assert (at["1000000"]["longest game"], at["1000000"]["games cut at the frame cap"]) == (1_200, 2)
    text = (out / "report.md").read_text()
    assert f"| {name} | 550,000 | 0.6 | 4.5e-05 | - | - | - | 1,000 | 1 |" in text


def test_report_names_the_steps_a_run_was_resumed_from(tmp_path):
    runs_dir = tmp_path / "bench"
    for seed in (1, 2):
        synthetic_run(
            runs_dir,
            f"Breakout-v5__ppo_atari__{seed}",
            [1.0] * 20,
            sps=400.0,
            last_step=1_000_000,
            meta={"script": "ppo_atari", "env_id": "Breakout-v5", "seed": seed},
        )
    resumed = runs_dir / "Breakout-v5__ppo_atari__2"
    for start in (400_000, 700_000):  # as the scripts resume: log again from the checkpoint's step on
        with SummaryWriter(str(resumed), purge_step=start + 1, filename_suffix=f".{start}") as w:
            w.add_scalar("charts/episodic_return", 1.0, start + 50_000)
            w.add_scalar("charts/SPS", 400.0, 1_000_000)
    with SummaryWriter(str(runs_dir / "Breakout-v5__ppo_atari__1"), filename_suffix=".more") as w:
        w.add_scalar("charts/SPS", 400.0, 1_000_000)  # a second event file that is no resume
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out)))
    row = json.loads((out / "report.json").read_text())["ppo_atari/Breakout"]
    assert row["resumed_at"] == {"Breakout-v5__ppo_atari__2": [400_000, 700_000]}
    assert "- Breakout-v5__ppo_atari__2: from 400,000, 700,000 steps" in (out / "report.md").read_text()


def test_report_keeps_the_best_periodic_evaluation_and_the_last_of_a_step_played_twice(tmp_path):
    runs_dir = tmp_path / "bench"
    name = "Breakout-v5__ppo_atari__1"
    meta = {"script": "ppo_atari", "env_id": "Breakout-v5", "seed": 1}
    synthetic_run(runs_dir, name, [1.0] * 20, sps=400.0, last_step=1_500_000, meta=meta)
    (runs_dir / name / "stdout.log").write_text(
        "eval at step 500,000: 5.0 +- 1.0 over 10 games (10.0s), the best so far\n"
        "eval at step 1,000,000: 90.0 +- 9.0 over 10 games (20.0s), the best so far\n"
        "step 1,010,000/1,500,000 | SPS 400\n"
        "eval at step 1,000,000: 9.0 +- 3.0 over 10 games (12.0s), the best so far\n"  # resumed: played again
        "eval at step 1,500,000: 7.0 +- 2.0 over 10 games (14.0s)\n"
    )
    out = tmp_path / "out"
    report.write_report(report.Args(runs_dir=str(runs_dir), out_dir=str(out)))
    cost = json.loads((out / "report.json").read_text())["ppo_atari/Breakout"]["periodic_evaluations"][name]
    assert cost["count"] == 3 and cost["seconds"] == 36.0
    assert cost["best"] == {"step": 1_000_000, "mean": 9.0} and cost["last"] == {"step": 1_500_000, "seconds": 14.0}
    assert f"| {name} | 3 | 36 | " in (out / "report.md").read_text()


def test_throughput_records_the_num_steps_a_variant_runs_with(tmp_path):
    """A variant's --num-steps sets the rollout the run uses; its row must say so (a row once said 5
    for a run at 20) and the step budget is rounded to that rollout."""
    import throughput  # noqa: E402

    args = throughput.Args(
        scripts=["a2c_atari"], variants=["num-steps=20 no-cuda"], steps=160, num_envs=4, env_backend="ale", env_steps=10
    )
    row, env_only = throughput.measure_once(args, str(tmp_path))
    assert env_only["what"] == "env only, random actions"
    assert row["what"] == "a2c_atari.py --num-steps 20 --no-cuda"
    assert row["num_steps"] == 20
    assert row["steps"] == 160  # two rollouts of 4 envs x 20 steps
