"""benchmarks/lstm_memory.py: the three ways of handing the LSTM its state, on a tiny untrained agent."""

import json
import subprocess
import sys

import torch
from conftest import ROOT, tiny_args

import a2c_lstm_atari as L

sys.path.insert(0, str(ROOT / "benchmarks"))
import lstm_memory  # noqa: E402


class Recorder(torch.nn.Module):
    """An LSTM agent that records the state each step receives."""

    def __init__(self, agent):
        super().__init__()
        self.agent, self.received = agent, []

    def initial_state(self, num_envs, device):
        return self.agent.initial_state(num_envs, device)

    def step(self, obs, state, starts):
        self.received.append(tuple(s.clone() for s in state))
        return self.agent.step(obs, state, starts)


def test_each_mode_hands_the_network_the_state_it_names():
    torch.manual_seed(0)
    agent = L.Agent(4, frame_stack=1, lstm_hidden_size=8)
    obs, starts = torch.randint(0, 255, (3, 1, 84, 84), dtype=torch.uint8), torch.zeros(3, dtype=torch.bool)
    state = (torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    for mode in lstm_memory.MODES:
        inner = Recorder(agent)
        lstm_memory.HandledState(inner, mode).step(obs, state, starts)
        h, c = inner.received[0]
        if mode == "as-trained":
            assert torch.equal(h, state[0]) and torch.equal(c, state[1])
        elif mode == "zeroed":
            assert not h.any() and not c.any()
        else:  # env i gets env i-1's state, never its own
            assert torch.equal(h[0, 1], state[0][0, 0]) and torch.equal(c[0, 0], state[1][0, 2])
            assert all(not torch.equal(h[0, i], state[0][0, i]) for i in range(3))


def test_the_three_modes_play_whole_games_and_as_trained_is_the_script_own_evaluation(tmp_path, monkeypatch):
    args = tiny_args(L, tmp_path, iterations=1, run_name="tiny", max_episode_frames=400)
    L.train(args)
    steps, play, agent_step = {}, lstm_memory.play, L.Agent.step  # each mode's (state in, state out) of every step

    def recording_play(module, state, mode, *rest):
        steps[mode] = []
        return play(module, state, mode, *rest)

    def recording_step(self, obs, state, starts):
        logits, values, out = agent_step(self, obs, state, starts)
        steps[list(steps)[-1]].append((torch.stack(state), torch.stack(out)))
        return logits, values, out

    monkeypatch.setattr(lstm_memory, "play", recording_play)
    monkeypatch.setattr(L.Agent, "step", recording_step)
    out = tmp_path / "memory.json"
    results = lstm_memory.main(
        lstm_memory.Args(str(tmp_path / "runs" / "tiny"), episodes=3, env_backend="ale", seed=7, out=str(out))
    )
    assert set(results["modes"]) == set(lstm_memory.MODES) == set(steps)
    assert all(len(r["scores"]) == 3 for r in results["modes"].values())
    assert json.loads(out.read_text())["modes"] == results["modes"]
    # the states the network got at each step after the first, against the state it gave back the step before
    for mode, handed in steps.items():
        assert len(handed) > 100, (mode, len(handed))  # whole games: hundreds of steps
        received, previous = torch.stack([s for s, _ in handed[1:]]), torch.stack([o for _, o in handed[:-1]])
        assert previous.abs().amax(dim=(1, 3, 4)).min() > 0, mode  # every env's state is non-zero at every step
        if mode == "as-trained":
            assert torch.equal(received, previous), mode
        elif mode == "zeroed":
            assert not received.any(), mode
        else:  # the 2 evaluation envs swap states
            assert torch.equal(received, previous.roll(1, dims=3)) and not torch.equal(received, previous), mode
    state = L.load_checkpoint(tmp_path / "runs" / "tiny")
    agent = L.Agent(state["num_actions"], args.frame_stack, args.lstm_hidden_size)
    agent.load_state_dict(state["model"])
    own = L.evaluate(agent, L.Args(**{**state["args"], "eval_episodes": 3}), "ale", torch.device("cpu"), seed=7)
    assert results["modes"]["as-trained"]["scores"] == own.tolist()


def test_a_checkpoint_that_does_not_fit_the_network_is_one_sentence(tmp_path):
    L.train(tiny_args(L, tmp_path, iterations=1, run_name="tiny"))
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True)
    state["args"]["lstm_hidden_size"] = 64  # the weights are 32 wide
    misfit = tmp_path / "misfit.pt"
    torch.save(state, misfit)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lstm_memory.py"), str(misfit), "--episodes", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "does not fit a2c_lstm_atari.py's network" in line, line
