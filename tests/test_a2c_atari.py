"""A2C-specific behaviour of a2c_atari.py: n-step returns, TensorFlow-style RMSprop, the
learning-rate schedule, the A2C loss, and logged evaluations (tests/test_evaluation.py plays them)."""

import dataclasses

import pytest
import torch
from conftest import tiny_args

import a2c_atari as A


def test_n_step_returns_match_a_hand_computed_example_with_an_episode_end():
    # 5 steps of one env (A2C's default rollout); the episode ends on the transition at step 2
    gamma = 0.99
    rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0], [2.0]])
    values = torch.tensor([[0.3], [0.2], [0.1], [0.4], [0.5]])
    dones = torch.tensor([[0.0], [0.0], [1.0], [0.0], [0.0]])
    last_value = torch.tensor([3.0])
    _, returns = A.compute_gae(rewards, values, dones, last_value, gamma, 1.0)
    expected = [
        1 + gamma * 0 + gamma**2 * 1,  # steps 0-2, nothing after the episode end
        0 + gamma * 1,
        1.0,
        0 + gamma * 2 + gamma**2 * 3,  # steps 3-4, bootstrapped from last_value
        2 + gamma * 3,
    ]
    assert returns[:, 0].tolist() == pytest.approx(expected)


def test_rmsprop_tf_follows_its_formula_and_differs_from_torchs():
    lr, alpha, eps = 0.1, 0.9, 1e-5
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = A.RMSpropTF([p], lr=lr, alpha=alpha, eps=eps)
    expected, ms = torch.tensor([1.0, -2.0]), torch.ones(2)
    for grad in ([0.5, -1.0], [2.0, 0.25]):
        g = torch.tensor(grad)
        p.grad = g.clone()
        opt.step()
        ms = alpha * ms + (1 - alpha) * g * g  # mean square starts at 1 (TF1)
        expected = expected - lr * g / torch.sqrt(ms + eps)  # eps inside the root
        assert torch.allclose(p.detach(), expected, atol=1e-7)
    # the same first step from the same start: PyTorch's RMSprop moves each weight more than three times as far
    ours, theirs = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    for param, optimizer in [(ours, A.RMSpropTF), (theirs, torch.optim.RMSprop)]:
        param.grad = torch.tensor([0.5, -1.0])
        optimizer([param], lr=lr, alpha=alpha, eps=eps).step()
    moved = [(p.detach() - torch.tensor([1.0, -2.0])).abs() for p in (ours, theirs)]
    assert (moved[0] > 0).all() and (moved[1] > 3 * moved[0]).all(), moved


def test_learning_rate_reaches_lr_final_at_decay_steps_and_stays():
    args = A.Args(learning_rate=1e-3, lr_final=1e-4, decay_steps=1000, total_timesteps=5000)
    assert A.learning_rate_at(0, args) == pytest.approx(1e-3)
    assert A.learning_rate_at(500, args) == pytest.approx(5.5e-4)
    assert A.learning_rate_at(1000, args) == pytest.approx(1e-4)
    assert A.learning_rate_at(4000, args) == pytest.approx(1e-4)
    whole_run = dataclasses.replace(args, decay_steps=0)
    assert A.learning_rate_at(2500, whole_run) == pytest.approx(5.5e-4)
    assert A.learning_rate_at(5000, whole_run) == pytest.approx(1e-4)


def batch(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 255, (n, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, 4, (n,), generator=g)
    return obs, actions


def test_positive_advantage_makes_the_taken_action_more_likely():
    torch.manual_seed(0)
    agent = A.Agent(4)
    obs, actions = batch()
    with torch.no_grad():
        before = torch.log_softmax(agent(obs)[0], -1).gather(1, actions[:, None])
    loss, _ = A.a2c_loss(
        *agent(obs),
        actions,
        torch.ones(20),
        torch.zeros(20),
        torch.ones(20),
        value_loss="mse",
        norm_adv=False,
        ent_coef=0.0,
        vf_coef=0.0,
    )
    loss.backward()
    with torch.no_grad():
        for p in agent.parameters():
            p -= 0.01 * p.grad
        after = torch.log_softmax(agent(obs)[0], -1).gather(1, actions[:, None])
    assert after.mean() > before.mean()


def test_value_losses_and_the_valid_mask():
    torch.manual_seed(0)
    agent = A.Agent(4)
    obs, actions = batch()
    with torch.no_grad():
        values = agent(obs)[1]
    adv = torch.zeros(20)
    settings = dict(norm_adv=False, ent_coef=0.0, vf_coef=0.5)
    _, mse = A.a2c_loss(*agent(obs), actions, adv, values + 3.0, torch.ones(20), value_loss="mse", **settings)
    _, huber = A.a2c_loss(*agent(obs), actions, adv, values + 3.0, torch.ones(20), value_loss="huber", **settings)
    assert mse["value_loss"].item() == pytest.approx(9.0, rel=1e-4)
    assert huber["value_loss"].item() == pytest.approx(2.5, rel=1e-4)  # |e| - 0.5 beyond delta 1
    valid = torch.ones(20)
    valid[:5] = 0
    garbage = values.clone()
    garbage[:5] += 100
    _, masked = A.a2c_loss(
        *agent(obs), actions, adv, torch.where(valid.bool(), values + 3.0, garbage), valid, value_loss="mse", **settings
    )
    assert masked["value_loss"].item() == pytest.approx(9.0, rel=1e-4)


def test_steps_outside_the_mask_change_no_term_of_the_loss_and_no_gradient():
    """Every term (policy, value, entropy) and the advantage normalisation see the valid steps alone:
    garbage in the invalid ones leaves the loss and its gradients those of the valid steps by themselves."""
    torch.manual_seed(0)
    agent = A.Agent(4)
    obs, actions = batch()
    valid = torch.ones(20)
    valid[[0, 3, 7, 8, 15]] = 0
    keep = valid.bool()
    adv, returns = torch.randn(20), torch.randn(20)
    settings = dict(value_loss="mse", norm_adv=True, ent_coef=0.01, vf_coef=0.5)

    def loss_and_grads(logits, values, actions, adv, returns, valid):
        agent.zero_grad()
        loss, figures = A.a2c_loss(logits, values, actions, adv, returns, valid, **settings)
        loss.backward()
        return figures, [p.grad.clone() for p in agent.parameters()]

    logits, values = agent(obs)
    alone = loss_and_grads(logits[keep], values[keep], actions[keep], adv[keep], returns[keep], valid[keep])
    logits, values = agent(obs)
    garbage = loss_and_grads(
        logits,
        values,
        torch.where(keep, actions, (actions + 1) % 4),
        torch.where(keep, adv, adv + 50),
        torch.where(keep, returns, returns - 100),
        valid,
    )
    for name in ["loss", "policy_loss", "value_loss", "entropy"]:
        assert garbage[0][name].item() == pytest.approx(alone[0][name].item(), rel=1e-5, abs=1e-7), name
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(alone[1], garbage[1]))


def test_training_logs_evaluations(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = tiny_args(A, tmp_path, iterations=4, run_name="eval", eval_every=20, eval_episodes=2, max_episode_frames=100)
    A.train(args)
    acc = EventAccumulator(str(tmp_path / "runs" / "eval"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/return_mean")] == [20, 40]
    assert {"eval/return_std", "losses/policy_loss", "losses/value_loss"} <= set(acc.Tags()["scalars"])


def test_adam_option_takes_adam_steps(tmp_path):
    out = A.train(tiny_args(A, tmp_path, iterations=2, run_name="adam", optimizer="adam", checkpoint_every=1))
    first, last = (torch.load(out["checkpoint"].replace("000002", f"00000{i}"), weights_only=True) for i in (1, 2))
    moments = next(iter(last["optimizer"]["state"].values()))
    assert "exp_avg" in moments and int(moments["step"]) == 2
    assert any(not torch.equal(first["model"][k], last["model"][k]) for k in last["model"])  # the step moved them
