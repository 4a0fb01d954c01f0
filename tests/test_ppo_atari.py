"""PPO-specific behaviour of ppo_atari.py: rollout masking at episode boundaries, the clipped
losses, early stopping on KL, the learning-rate schedule, and --compile."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import BACKENDS, tiny_args

import ppo_atari as P

CPU = torch.device("cpu")


def rollout(backend, num_steps=64, sent=None, ends=None, **overrides):
    """One rollout of a fresh agent on games capped at 30 agent steps, so games end inside it;
    `sent` (a list) receives the (actions, lives) of every env step, `ends` its (terminated, truncated)."""
    torch.manual_seed(0)
    args = P.Args(num_envs=3, num_steps=num_steps, **{"max_episode_frames": 120, **overrides})
    envs = P.EnvGroups(args, backend, seed=1, num_envs=3, device=CPU)  # overlapped: groups of 1 and 2 envs
    spies = [spy_on(group.envs) for group in envs] if sent is not None or ends is not None else []
    agent = P.Agent(envs.num_actions)
    buf = P.RolloutBuffer(num_steps, 3, 4, CPU)
    P.collect_rollout(lambda obs: P.policy_step(agent, obs), envs, buf, args, CPU)
    envs.close()
    for out, fields in [(sent, (0, 1)), (ends, (2, 3))]:  # every env's figures at each step, in env order
        if out is not None:
            out += [tuple(np.concatenate([spy[t][i] for spy in spies]) for i in fields) for t in range(num_steps)]
    return agent, buf, envs, args


def spy_on(envs):
    """Records (actions sent, lives, terminated, truncated received) of each step of `envs`."""
    steps, send, recv = [], envs.send, envs.recv

    def spy_send(actions):
        steps.append([np.array(actions)])
        send(actions)

    def spy_recv():
        out = recv()
        steps[-1] += [out[4], out[2], out[3]]
        return out

    envs.send, envs.recv = spy_send, spy_recv
    return steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_steps_are_masked_and_never_bootstrapped_across(backend):
    _, buf, _, _ = rollout(backend, episodic_life=False)  # only resets make steps invalid here
    valid, dones = buf.valid.bool(), buf.dones.bool()
    # a step is invalid (the backend resets and ignores the action) exactly after a game ended;
    # games are capped at 30 steps, so each env ends twice in 64 steps
    for env in range(3):
        invalid = [t for t in range(64) if not valid[t, env]]
        assert len(invalid) >= 2
        for t in invalid:
            assert dones[t - 1, env], "a reset step must follow a transition that ended the episode"
            assert buf.rewards[t, env] == 0
            # the first observation of the new game carries no frames of the old one
            if t + 1 < 64:
                assert buf.obs[t + 1, env, :3].eq(0).all()
                assert buf.obs[t + 1, env, 3].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_transitions_straddling_a_reset_do_not_enter_the_loss(backend):
    agent, buf, _, _ = rollout(backend)
    mask = buf.valid.flatten()
    assert 0 < mask.sum() < mask.numel()
    obs = buf.obs.flatten(0, 1)
    last_value = torch.zeros(3)
    advantages, returns = P.compute_gae(buf.rewards, buf.values, buf.dones, last_value, 0.99, 0.95)

    def loss_and_grads(actions, logprobs, values, advantages, returns):
        agent.zero_grad()
        loss, _ = P.ppo_loss(
            agent,
            obs,
            actions,
            logprobs,
            advantages.flatten(),
            returns.flatten(),
            values,
            mask,
            clip_coef=0.1,
            clip_vloss=True,
            norm_adv=True,
            ent_coef=0.01,
            vf_coef=0.5,
        )
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in agent.parameters()]

    actions, logprobs, values = buf.actions.flatten(), buf.logprobs.flatten(), buf.values.flatten()
    base = loss_and_grads(actions, logprobs, values, advantages, returns)
    invalid = ~mask.bool()
    garbage = loss_and_grads(
        torch.where(invalid, (actions + 1) % agent.actor.out_features, actions),
        torch.where(invalid, logprobs - 3.0, logprobs),
        torch.where(invalid, values + 50, values),
        torch.where(invalid.view(64, 3), advantages + 100, advantages),
        torch.where(invalid.view(64, 3), returns - 100, returns),
    )
    assert torch.allclose(base[0], garbage[0])
    assert all(torch.allclose(a, b) for a, b in zip(base[1], garbage[1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fire_relaunches_play_after_a_lost_life_and_stays_out_of_the_loss(backend):
    sent = []
    _, buf, _, _ = rollout(backend, num_steps=160, sent=sent, max_episode_frames=108_000)
    actions, lives = np.stack([a for a, _ in sent]), np.stack([l for _, l in sent])
    lost = [(t, e) for t in range(1, 159) for e in range(3) if 0 < lives[t, e] < lives[t - 1, e]]
    assert lost, "a random agent loses a life of Breakout within 160 steps"
    for t, e in lost:
        assert buf.dones[t, e] == 1  # episodic life: the lost life ends the episode for learning
        assert actions[t + 1, e] == 1, "Breakout's FIRE is pressed on the step after a lost life"
        assert buf.valid[t + 1, e] == 0, "and that step, not the agent's choice, stays out of the loss"
    agents_own = buf.valid.bool().numpy()
    assert (actions[agents_own] == buf.actions.numpy()[agents_own]).all()

    sent = []
    _, buf, _, _ = rollout(backend, num_steps=160, sent=sent, max_episode_frames=108_000, episodic_life=False)
    assert (np.stack([a for a, _ in sent]) == buf.actions.numpy()).all()  # whole games: nothing forced
    lives = np.stack([l for _, l in sent])
    resets = [(t + 1, e) for t, e in zip(*np.nonzero(buf.dones.numpy()[:-1]))]  # the step after a game's end
    assert len(resets) >= 1 and all(lives[t - 1, e] == 0 for t, e in resets)  # a game over, not a lost life
    assert sorted(zip(*np.nonzero(buf.valid.numpy() == 0))) == resets  # those steps alone stay out of the loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limit_bootstrap_marks_only_capped_transitions(backend):
    ends = []  # games capped at 50 steps: lost lives and cut games both end episodes in 64 steps
    _, buf, _, _ = rollout(backend, ends=ends, max_episode_frames=200, time_limit_bootstrap=True)
    terminated, truncated = (torch.from_numpy(np.stack([e[i] for e in ends])) for i in (0, 1))
    cut, dones = buf.truncations.bool(), buf.dones.bool()
    assert torch.equal(cut, truncated & ~terminated)  # the cap's steps, and no other
    assert cut.any() and (dones & ~cut).any()  # other episode ends (lost lives) are not bootstrapped through
    assert (dones | ~cut).all()  # a cut step is also an episode end for GAE
    _, buf_plain, _, _ = rollout(backend)
    assert not buf_plain.truncations.any()


def minibatch(agent, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 255, (n, 4, 84, 84), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        action, logprob, value = P.policy_step(agent, obs)
    return obs, action, logprob, value


def test_loss_at_the_collecting_policy_has_no_kl_and_no_clipping():
    torch.manual_seed(0)
    agent = P.Agent(4)
    obs, action, logprob, value = minibatch(agent)
    adv = torch.randn(32)
    _, figures = P.ppo_loss(
        agent,
        obs,
        action,
        logprob,
        adv,
        value + adv,
        value,
        torch.ones(32),
        clip_coef=0.1,
        clip_vloss=True,
        norm_adv=True,
        ent_coef=0.01,
        vf_coef=0.5,
    )
    assert figures.keys() == {"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"}
    assert abs(figures["approx_kl"].item()) < 1e-6 and figures["clipfrac"].item() == 0.0
    assert abs(figures["policy_loss"].item()) < 1e-5  # -mean(normalised advantage) at ratio 1
    assert figures["entropy"].item() == pytest.approx(np.log(4), abs=1e-3)  # near-uniform initial policy


def test_ratio_beyond_the_clip_gets_no_policy_gradient():
    torch.manual_seed(0)
    agent = P.Agent(4)
    obs, action, logprob, value = minibatch(agent)
    positive = torch.ones(32)
    # old policy much less likely to take these actions: ratio e^1 > 1 + clip, advantage > 0
    agent.zero_grad()
    no_extras = dict(clip_coef=0.1, clip_vloss=False, norm_adv=False, ent_coef=0.0, vf_coef=0.0)
    loss, figures = P.ppo_loss(agent, obs, action, logprob - 1.0, positive, value, value, torch.ones(32), **no_extras)
    loss.backward()
    assert figures["clipfrac"].item() == 1.0  # every sample clipped
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in agent.parameters())
    # inside the clip range the same advantage does move the policy
    agent.zero_grad()
    loss, _ = P.ppo_loss(agent, obs, action, logprob, positive, value, value, torch.ones(32), **no_extras)
    loss.backward()
    assert agent.actor.weight.grad.abs().max() > 0


def test_clipped_value_loss_takes_the_larger_of_the_two_errors():
    torch.manual_seed(0)
    agent = P.Agent(4)
    obs, action, logprob, value = minibatch(agent)
    returns = value + 1.0
    old_values = value - 0.5  # new values sit outside old +- clip: clipped prediction is worse
    settings = dict(clip_coef=0.1, norm_adv=False, ent_coef=0.0, vf_coef=0.5)
    _, unclipped = P.ppo_loss(
        agent, obs, action, logprob, torch.zeros(32), returns, old_values, torch.ones(32), clip_vloss=False, **settings
    )
    _, clipped = P.ppo_loss(
        agent, obs, action, logprob, torch.zeros(32), returns, old_values, torch.ones(32), clip_vloss=True, **settings
    )
    assert unclipped["value_loss"].item() == pytest.approx(0.5, rel=1e-4)  # 0.5 * 1^2
    assert clipped["value_loss"].item() == pytest.approx(0.5 * 1.4**2, rel=1e-4)  # (old + 0.1) is 1.4 short


def test_target_kl_stops_the_update_after_the_offending_minibatch():
    def adam_steps(target_kl):
        torch.manual_seed(0)
        agent = P.Agent(4).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(agent.parameters(), lr=1e-2, eps=1e-5)
        obs, action, logprob, value = minibatch(agent, n=64)
        batch = {
            "frames": obs.permute(0, 2, 3, 1).contiguous(),
            "actions": action,
            "old_logprobs": logprob,
            "advantages": torch.randn(64),
            "returns": value,
            "old_values": value,
            "valid": torch.ones(64),
        }
        args = P.Args(update_epochs=4, num_minibatches=4, target_kl=target_kl)
        P.ppo_update(agent, opt, P.ppo_loss, batch, args, 16)
        return int(opt.state[agent.actor.weight]["step"])

    assert adam_steps(None) == 16
    assert adam_steps(1e-9) == 2  # the first minibatch is at the collecting policy: KL 0


def test_learning_rate_anneals_linearly_to_zero(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = tiny_args(P, tmp_path, iterations=4, run_name="lr", learning_rate=1e-3)
    P.train(args)
    acc = EventAccumulator(str(tmp_path / "runs" / "lr"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("charts/learning_rate")] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    P.train(dataclasses.replace(args, run_name="flat", anneal_lr=False))
    acc = EventAccumulator(str(tmp_path / "runs" / "flat"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("charts/learning_rate")] == pytest.approx([1e-3] * 4)


def test_compile_learns_the_same_as_eager(tmp_path):
    from torch._dynamo.utils import counters

    weights, graphs = [], []
    for compiled in (False, True):
        counters.clear()
        args = tiny_args(P, tmp_path, iterations=2, run_name=f"compile-{compiled}", compile=compiled, seed=3)
        out = P.train(args)
        weights.append(torch.load(out["checkpoint"], weights_only=True)["model"])
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == 0 and graphs[1] >= 3, graphs  # a graph each for the policy step, the returns, the loss
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], atol=1e-5), name


def test_decay_steps_anneals_over_n_steps_then_holds_zero():
    args = P.Args(learning_rate=1e-3, num_envs=8, num_steps=128, total_timesteps=8 * 128 * 10, decay_steps=8 * 128 * 4)
    rates = [P.learning_rate_at(i, 10, args) for i in range(1, 8)]
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0, 0, 0])
    ten_million = dataclasses.replace(args, decay_steps=10_000_000)  # a short run on a 10M schedule
    assert P.learning_rate_at(977, 10, ten_million) == pytest.approx(1e-3 * (1 - 976 * 1024 / 10_000_000))


def test_decay_steps_zero_is_the_run_own_schedule_bit_for_bit():
    args = P.Args(learning_rate=2.5e-4, total_timesteps=10_000_000)
    n = args.total_timesteps // (args.num_envs * args.num_steps)
    assert all(P.learning_rate_at(i, n, args) == (1.0 - (i - 1.0) / n) * 2.5e-4 for i in range(1, n + 1))
    assert P.learning_rate_at(5, n, dataclasses.replace(args, anneal_lr=False)) == 2.5e-4


def test_update_sums_its_logged_figures_over_processes_once_not_every_minibatch():
    torch.manual_seed(0)
    n, calls = 32, []
    batch = {
        "frames": torch.randint(0, 255, (n, 84, 84, 4), dtype=torch.uint8),
        "actions": torch.randint(0, 4, (n,)),
        "old_logprobs": torch.full((n,), -1.386),
        "advantages": torch.randn(n),
        "returns": torch.randn(n),
        "old_values": torch.randn(n),
        "valid": torch.ones(n),
    }
    agent = P.Agent(4)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-4)
    args = P.Args(update_epochs=2, num_minibatches=4)

    def counting(x):  # a stand-in for the sum over processes that counts the collectives
        calls.append(x.shape)
        return x

    figures = P.ppo_update(agent, optimizer, P.ppo_loss, batch, args, minibatch_size=8, over_processes=counting)
    minibatches = 2 * 4
    assert len(calls) == 3 * minibatches + 1  # count, advantage mean and spread per minibatch; figures once
    assert calls[-1] == (6,)  # loss, policy_loss, value_loss, entropy, approx_kl, clipfrac: one collective
    assert set(figures) == {"loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm"}
