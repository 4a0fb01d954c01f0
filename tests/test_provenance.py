"""provenance.json: what produced a run (the script's own hash, git, command, versions, machines), in
every checkpoint too; a resume appends what changed; sample.py names the script hash it plays."""

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT, tiny_args

import sample


def git_says(*command):
    """What git says about the checkout the scripts are in, or None where there is no git or no checkout."""
    try:
        return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def test_a_run_records_the_script_hash_versions_and_machine_in_its_folder_and_checkpoints(script, tmp_path):
    before = git_says("rev-parse", "HEAD"), git_says("status", "--porcelain", "-uno")
    out = script.train(tiny_args(script, tmp_path, iterations=1, run_name="prov"))
    after = git_says("rev-parse", "HEAD"), git_says("status", "--porcelain", "-uno")
    record = json.loads((tmp_path / "runs" / "prov" / "provenance.json").read_text())
    assert record["script_sha256"] == hashlib.sha256((ROOT / f"{script.SCRIPT}.py").read_bytes()).hexdigest()
    assert record["packages"]["torch"] == importlib.metadata.version("torch")
    assert record["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert record["packages"]["ale-py"] == importlib.metadata.version("ale-py")
    assert record["processes"] == 1 and record["machines"][0]["ranks"] == [0] and record["machines"][0]["cores"]
    if before[0] is None:  # no git, or not a checkout: no error, the hash alone names the code
        assert record["git"] is None
    else:  # the checkout's commit (either side of the run, should someone commit meanwhile), and whether it was edited
        assert record["git"] is not None, f"the run found no git checkout, but {ROOT} is one at {before[0]}"
        assert record["git"]["commit"] in {before[0], after[0]} and len(record["git"]["commit"]) == 40, record["git"]
        assert record["git"]["dirty"] == bool(before[1]) or before[1] != after[1], record["git"]
    assert torch.load(out["checkpoint"], weights_only=True)["provenance"] == record


def test_a_resume_appends_what_changed_and_an_edited_copy_is_told_apart(tmp_path):
    copy = tmp_path / "copied" / "a2c_atari.py"  # copied into a new folder and edited, as users do
    copy.parent.mkdir()
    shutil.copyfile(ROOT / "a2c_atari.py", copy)
    spec = importlib.util.spec_from_file_location("a2c_atari_copy", copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules["a2c_atari_copy"] = module
    spec.loader.exec_module(module)
    module.train(tiny_args(module, tmp_path, iterations=1, run_name="copy"))
    run_dir = tmp_path / "runs" / "copy"
    first = json.loads((run_dir / "provenance.json").read_text())
    assert first["git"] is None  # outside a git checkout: no error, the hash alone names the code
    copy.write_text(copy.read_text() + "\n# an edit\n")
    spec.loader.exec_module(module)
    module.train(tiny_args(module, tmp_path, iterations=2, run_name="copy", resume=str(run_dir)))
    record = json.loads((run_dir / "provenance.json").read_text())
    assert record["script_sha256"] == first["script_sha256"]  # the start's record stays
    changed = record["resumes"][0]["changed"]
    assert changed == {"script_sha256": hashlib.sha256(copy.read_bytes()).hexdigest()}


def test_sample_names_the_script_hash_and_warns_when_the_script_here_differs(tmp_path, capsys, monkeypatch):
    import a2c_atari as A

    out = A.train(tiny_args(A, tmp_path, iterations=1, run_name="s"))
    args = sample.Args(checkpoint=out["checkpoint"], episodes=1, max_episode_frames=200, cuda=False, env_backend="ale")
    sample.play(args)
    sha = hashlib.sha256((ROOT / "a2c_atari.py").read_bytes()).hexdigest()
    assert f"sha256 {sha[:12]}, the script that last wrote this checkpoint" in capsys.readouterr().out
    state = torch.load(out["checkpoint"], weights_only=True)
    state["provenance"]["script_sha256"] = "0" * 64
    monkeypatch.setattr(sample, "load", lambda path: (state, A, Path(out["checkpoint"]), ROOT / "a2c_atari.py"))
    sample.play(args)
    assert "warning: the checkpoint was last written by a2c_atari.py sha256 000000000000" in capsys.readouterr().err
