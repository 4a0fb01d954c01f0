"""Evaluation on whole games, checked on every script that evaluates: each env's quota of games,
whole-game scores across lost lives, the LSTM state started at each game, envs closed after."""

import importlib

import numpy as np
import pytest
import torch
from conftest import SCRIPTS

EVALUATING = SCRIPTS
CPU = torch.device("cpu")


class ScriptedGames:
    """Stands in for AtariEnvs: env i plays games of lengths[i] steps that lose a life on their second
    step. Game g of env i scores 1 before the lost life and 10^(i+1) * (g+1) on its last step, so every
    game's score names its env and its place. Like both backends, the step after a game ends is
    the reset step, whose action is ignored."""

    num_actions, fire_action = 4, 1

    def __init__(self, lengths):
        self.lengths = list(lengths)
        n = len(self.lengths)
        self.t, self.game = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.resetting, self.closed = np.zeros(n, bool), False
        self.reset_steps = []  # per step: which envs' step was a reset

    def frames(self):
        return np.zeros((len(self.lengths), 84, 84), np.uint8)

    def reset(self):
        return self.frames(), np.full(len(self.lengths), 2)

    def step(self, actions):
        n = len(self.lengths)
        reward, terminated, lives = np.zeros(n, np.float32), np.zeros(n, bool), np.full(n, 2)
        self.reset_steps.append(self.resetting.copy())
        for i in range(n):
            if self.resetting[i]:
                self.resetting[i], self.t[i], self.game[i] = False, 0, self.game[i] + 1
                continue
            self.t[i] += 1
            lives[i] = 2 if self.t[i] < 2 else 1
            reward[i] = 1.0 if self.t[i] == 1 else 0.0
            if self.t[i] == self.lengths[i]:
                reward[i] += 10 ** (i + 1) * (self.game[i] + 1)
                terminated[i] = self.resetting[i] = True
        return self.frames(), reward, terminated, np.zeros(n, bool), lives

    def close(self):
        self.closed = True


def scripted_evaluation(module, monkeypatch, lengths, **args):
    games = ScriptedGames(lengths)
    monkeypatch.setattr(module, "make_envs", lambda *a, **k: games)
    torch.manual_seed(0)
    args = module.Args(num_envs=len(lengths), **args)
    agent = module.Agent(4, args.frame_stack, *([16] if module.SCRIPT == "a2c_lstm_atari" else []))
    return agent, games, lambda: module.evaluate(agent, args, "ale", CPU, seed=5)


@pytest.mark.parametrize("name", EVALUATING)
def test_evaluation_plays_each_envs_quota_of_whole_games(name, monkeypatch):
    module = importlib.import_module(name)
    # 3 games over 2 envs: env 0 plays 2 (of 6 steps), env 1 plays 1 (of 2 steps), however fast
    # env 1 finishes more; taking the first 3 games to end would give env 1's 101 and 201 instead.
    _, games, evaluate = scripted_evaluation(module, monkeypatch, [6, 2], eval_episodes=3)
    scores = evaluate()
    assert sorted(scores.tolist()) == [11.0, 21.0, 101.0]  # the point before the lost life counts
    assert games.closed


@pytest.mark.parametrize("name", EVALUATING)
def test_evaluation_spreads_games_over_at_most_eval_episodes_envs(name, monkeypatch):
    module = importlib.import_module(name)
    _, _, evaluate = scripted_evaluation(module, monkeypatch, [3, 3], eval_episodes=5, eval_greedy=True)
    assert sorted(evaluate().tolist()) == [11.0, 21.0, 31.0, 101.0, 201.0]
    # fewer games than training envs: only as many envs as games are made, one game each
    requested = []

    def make_envs(args, backend, seed, num_envs):
        requested.append(num_envs)
        return ScriptedGames([3, 3, 3][:num_envs])

    _, _, evaluate = scripted_evaluation(module, monkeypatch, [3, 3, 3], eval_episodes=2)
    monkeypatch.setattr(module, "make_envs", make_envs)
    assert sorted(evaluate().tolist()) == [11.0, 101.0] and requested == [2]


def test_lstm_evaluation_starts_the_state_exactly_at_each_game(monkeypatch):
    module = importlib.import_module("a2c_lstm_atari")
    agent, games, evaluate = scripted_evaluation(module, monkeypatch, [4, 2], eval_episodes=4)
    seen = []
    step = agent.step

    def spy(obs, state, starts):
        seen.append(starts.clone())
        return step(obs, state, starts)

    agent.step = spy
    evaluate()
    expected = [torch.ones(2, dtype=torch.bool)] + [torch.from_numpy(r) for r in games.reset_steps[:-1]]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert any(r.any() for r in games.reset_steps)
