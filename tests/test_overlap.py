"""The overlapped rollout (--overlap, the default): two env groups, one stepping its emulators while
the policy runs on the other, must store exactly the transitions of the lockstep rollout, keep
each env's LSTM state its own, and give bit-identical runs for a seed."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import BACKENDS, tiny_args

CPU = torch.device("cpu")
NUM_ENVS, NUM_STEPS = 3, 64


def scripted_rollout(script, backend, overlap: bool, actions: np.ndarray):
    """One rollout of NUM_ENVS envs whose actions come from the table `actions` (step, env); the LSTM
    script's policy also advances its real state, from a fixed start, so its values depend on it."""
    torch.manual_seed(0)
    args = script.Args(num_envs=NUM_ENVS, num_steps=NUM_STEPS, max_episode_frames=120, overlap=overlap)
    envs = script.EnvGroups(args, backend, seed=1, num_envs=NUM_ENVS, device=CPU)
    assert len(envs) == (2 if overlap else 1)
    buf = script.RolloutBuffer(NUM_STEPS, NUM_ENVS, args.frame_stack, CPU)
    calls = []

    def chosen(obs):  # the policy is called for each group in turn at each step
        t, group = divmod(len(calls), len(envs))
        calls.append(group)
        action = torch.from_numpy(actions[t, envs[group].columns])
        assert len(action) == len(obs)
        return action, torch.zeros(len(obs))

    if script.SCRIPT == "a2c_lstm_atari":
        agent = script.Agent(envs.num_actions, args.frame_stack, 16)

        def policy(obs, state, starts):
            action, logprob = chosen(obs)
            _, value, state = agent.step(obs, state, starts)
            return action, logprob, value, state

        generator = torch.Generator().manual_seed(1)
        state = (torch.randn(1, NUM_ENVS, 16, generator=generator), torch.randn(1, NUM_ENVS, 16, generator=generator))
        games, state, _ = script.collect_rollout(
            policy, envs, buf, state, torch.zeros(NUM_ENVS, dtype=torch.bool), args, CPU
        )
    else:

        def policy(obs):
            return *chosen(obs), torch.zeros(len(obs))

        games, state, agent = script.collect_rollout(policy, envs, buf, args, CPU), None, None
    last_obs = envs.obs.clone()
    envs.close()
    return buf, games, state, last_obs, agent


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapped_rollout_stores_the_transitions_of_the_lockstep_one(script, backend):
    actions = np.random.default_rng(0).integers(0, 4, (NUM_STEPS, NUM_ENVS))
    serial, serial_games, serial_state, serial_obs, _ = scripted_rollout(script, backend, False, actions)
    overlapped, games, state, obs, agent = scripted_rollout(script, backend, True, actions)
    assert serial.valid.sum() < serial.valid.numel() and serial.dones.any()  # games and lives end inside it
    assert torch.equal(overlapped.frames, serial.frames)
    assert torch.equal(overlapped.actions, serial.actions)
    assert torch.equal(overlapped.step_data, serial.step_data)  # rewards, dones, cuts, valid (and LSTM starts)
    assert torch.equal(obs, serial_obs)
    assert sorted(games) == sorted(serial_games) and games
    if script.SCRIPT == "a2c_lstm_atari":
        assert torch.equal(overlapped.starts, serial.starts)
        # each env's state saw exactly its own observations and starts, in order
        assert torch.allclose(overlapped.values, serial.values, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state, serial_state))
        # and it is the state the training unroll computes from the stored observations and starts
        with torch.no_grad():
            _, values, unrolled_state = agent(overlapped.obs, overlapped.initial_state, overlapped.starts)
        assert torch.allclose(values, overlapped.values, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state, unrolled_state))


def test_overlap_splits_the_envs_in_two_seeded_as_one_group(script):
    args = script.Args(num_envs=5, overlap=True)
    envs = script.EnvGroups(args, "ale", seed=10, num_envs=5, device=CPU)
    try:
        assert [g.columns for g in envs] == [slice(0, 2), slice(2, 5)]
        assert [g.envs.seed for g in envs] == [10, 12]
        assert envs.obs.shape == (5, args.frame_stack, 84, 84)
    finally:
        envs.close()
    one = script.EnvGroups(dataclasses.replace(args, num_envs=1), "ale", seed=10, num_envs=1, device=CPU)
    assert len(one) == 1  # a single env cannot be split
    one.close()


def test_an_overlapped_run_is_bit_reproducible(script, tmp_path):
    outs = []
    for name in ("a", "b"):
        args = tiny_args(script, tmp_path, iterations=3, num_envs=4, seed=3, run_name=name, max_episode_frames=200)
        assert args.overlap
        out = script.train(args)
        outs.append(torch.load(out["checkpoint"], weights_only=True))
    assert all(torch.equal(outs[0]["model"][k], outs[1]["model"][k]) for k in outs[0]["model"])
    assert outs[0]["global_step"] == outs[1]["global_step"] > 0


def test_cpu_overlap_steps_the_network_on_one_thread_and_the_update_gets_them_back(script):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for overlap, inside in ((True, 1), (False, 2)):
            envs = script.EnvGroups(script.Args(num_envs=2, overlap=overlap), "ale", seed=1, num_envs=2, device=CPU)
            envs.close()
            with script.rollout_threads(envs, CPU):
                assert torch.get_num_threads() == inside
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
