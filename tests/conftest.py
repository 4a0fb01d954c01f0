"""Shared fixtures: every training script present at the repo root, and tiny settings for each."""

import importlib
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=UserWarning)

ALL_SCRIPTS = ["ppo_atari", "a2c_atari", "a2c_lstm_atari"]
SCRIPTS = [s for s in ALL_SCRIPTS if (ROOT / f"{s}.py").exists()]

# The smallest settings that still run whole iterations (rollout + update) of each script.
TINY = {
    "ppo_atari": dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1),
    "a2c_atari": dict(num_envs=2, num_steps=5),
    "a2c_lstm_atari": dict(num_envs=2, num_steps=8, lstm_hidden_size=32),
}


def backends():
    found = ["ale"]
    if importlib.util.find_spec("envpool") is not None:
        found.insert(0, "envpool")
    return found


BACKENDS = backends()


def tiny_args(module, tmp_path, iterations=2, **overrides):
    """Args for a run of `iterations` iterations that writes under tmp_path, quietly."""
    settings = dict(TINY[module.SCRIPT])
    settings.update(cuda=False, runs_dir=str(tmp_path / "runs"), log_interval=1e9, eval_every=0)
    settings.update(overrides)
    batch = settings["num_envs"] * settings["num_steps"]
    settings.setdefault("total_timesteps", iterations * batch)
    return module.Args(**settings)


@pytest.fixture(params=SCRIPTS)
def script(request):
    return importlib.import_module(request.param)
