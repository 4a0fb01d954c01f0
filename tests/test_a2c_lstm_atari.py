"""LSTM-specific behaviour of a2c_lstm_atari.py: the masked unroll, where the hidden state is
zeroed and where it is carried, and that training replays exactly what the rollout computed."""

import numpy as np
import pytest
import torch
from conftest import BACKENDS, tiny_args

import a2c_lstm_atari as L

CPU = torch.device("cpu")


def naive_unroll(lstm, x, state, starts):
    """Step by step, zeroing each env's state by hand before a step where it starts."""
    h, c = state
    outputs = []
    for t in range(x.shape[0]):
        keep = (~starts[t]).float().view(1, -1, 1)
        out, (h, c) = lstm(x[t : t + 1], (h * keep, c * keep))
        outputs.append(out)
    return torch.cat(outputs), (h, c)


@pytest.mark.parametrize("start_steps", [[], [3], [1, 4, 7]])
def test_masked_unroll_equals_a_naive_loop_in_outputs_and_gradients(start_steps):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5)
    x = torch.randn(8, 3, 6, requires_grad=True)
    state = (torch.randn(1, 3, 5), torch.randn(1, 3, 5))
    starts = torch.zeros(8, 3, dtype=torch.bool)
    starts[0, 1] = True
    for t in start_steps:
        starts[t, t % 3] = True
    results = []
    for unroll in (L.unroll_lstm, naive_unroll):
        lstm.zero_grad()
        x.grad = None
        out, (h, c) = unroll(lstm, x, state, starts)
        (out.square().sum() + h.sum() + c.sum()).backward()
        results.append(
            (out.detach(), h.detach(), c.detach(), x.grad.clone(), [p.grad.clone() for p in lstm.parameters()])
        )
    fast, slow = results
    for a, b in zip(fast[:4], slow[:4]):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast[4], slow[4]))


def test_one_lstm_call_per_piece_between_starts():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 4)
    calls = []
    lstm.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    x = torch.randn(10, 2, 4)
    state = (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))
    starts = torch.zeros(10, 2, dtype=torch.bool)
    starts[0] = True  # a start at the first step needs no cut
    L.unroll_lstm(lstm, x, state, starts)
    assert calls == [10]
    calls.clear()
    starts[6, 1] = True
    L.unroll_lstm(lstm, x, state, starts)
    assert calls == [6, 4]


def rollout(backend, reset_on_life_loss=False, lives=None):
    """One rollout on games capped at 30 steps; `lives` (a list) receives each group's lives at each step."""
    torch.manual_seed(0)
    # whole games for learning, so that only the backend's reset steps are invalid (no FIRE after a lost life)
    args = L.Args(
        num_envs=3,
        num_steps=48,
        max_episode_frames=120,
        lstm_hidden_size=16,
        reset_on_life_loss=reset_on_life_loss,
        episodic_life=False,
    )
    envs = L.EnvGroups(args, backend, seed=1, num_envs=3, device=CPU)  # overlapped: groups of 1 and 2 envs
    for group in envs if lives is not None else []:
        lives.append(record_lives(group.envs))
    agent = L.Agent(envs.num_actions, args.frame_stack, args.lstm_hidden_size)
    buf = L.RolloutBuffer(args.num_steps, 3, args.frame_stack, CPU)
    state = (torch.randn(1, 3, 16), torch.randn(1, 3, 16))  # as if carried from an earlier rollout
    starts = torch.zeros(3, dtype=torch.bool)
    out = L.collect_rollout(lambda o, s, st: L.policy_step(agent, o, s, st), envs, buf, state, starts, args, CPU)
    envs.close()
    return agent, buf, out


def record_lives(envs):
    """Wraps envs.recv so that each step's lives are appended to the returned list."""
    got, recv = [], envs.recv

    def spy_recv():
        out = recv()
        got.append(out[4])
        return out

    envs.recv = spy_recv
    return got


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_unroll_replays_the_rollout_exactly(backend):
    agent, buf, _ = rollout(backend)
    assert buf.starts[1:].any()  # games capped at 30 steps start inside the rollout
    # training reads the cut points from the host's copy of the starts, without a device sync
    assert buf.cuts() == (buf.starts[1:].any(dim=1).nonzero().flatten() + 1).tolist()
    with torch.no_grad():
        logits, values, _ = agent(buf.obs, buf.initial_state, buf.starts, buf.cuts())
        logprobs = torch.distributions.Categorical(logits=logits).log_prob(buf.actions)
    assert torch.allclose(values, buf.values, atol=1e-5)
    assert torch.allclose(logprobs, buf.logprobs, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_is_zeroed_exactly_at_episode_starts_and_carried_otherwise(backend):
    agent, buf, _ = rollout(backend)
    # a start is flagged on the step after the backend's reset step, where the new game's first frame is seen
    invalid = buf.valid == 0
    assert torch.equal(buf.starts[1:], invalid[:-1])
    with torch.no_grad():
        _, values, _ = agent(buf.obs, buf.initial_state, buf.starts)
        other = (torch.randn_like(buf.initial_state[0]), torch.randn_like(buf.initial_state[1]))
        _, values_other, _ = agent(buf.obs, other, buf.starts)
    for env in range(3):
        first_start = int(buf.starts[:, env].nonzero()[0])
        # before the env's first episode start the carried state matters, after it it does not
        assert not torch.allclose(values[:first_start, env], values_other[:first_start, env])
        assert torch.allclose(values[first_start:, env], values_other[first_start:, env], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_on_life_loss_also_starts_the_state_after_a_lost_life(backend):
    groups = []  # without the flag the state starts after reset steps alone (the test above)
    _, buf_life, _ = rollout(backend, reset_on_life_loss=True, lives=groups)
    lives = torch.from_numpy(np.concatenate([np.stack(g[:48]) for g in groups], axis=1))  # (steps, envs)
    valid = buf_life.valid == 1
    life_lost = torch.zeros_like(valid)
    life_lost[1:] = valid[1:] & (lives[1:] < lives[:-1])  # fewer lives on a step of the same game
    assert life_lost.any()
    # the state starts over on the step after a reset step or a lost life, and on no other
    assert torch.equal(buf_life.starts[1:], ~valid[:-1] | life_lost[:-1])


def test_checkpoint_rebuilds_the_agent_for_playback(tmp_path):
    from conftest import tiny_args

    out = L.train(tiny_args(L, tmp_path, iterations=1, run_name="lstm", lstm_hidden_size=24, frame_stack=2))
    state = torch.load(out["checkpoint"], weights_only=True)
    agent = L.Agent(state["num_actions"], state["args"]["frame_stack"], state["args"]["lstm_hidden_size"])
    agent.load_state_dict(state["model"])
    assert agent.lstm.hidden_size == 24 and agent.network[0].in_channels == 2


def test_a_checkpoint_of_the_removed_layer_norm_control_is_one_sentence_not_a_traceback():
    """--lstm-layer-norm was a control (docs/lstm-study.md, at commit bb3e768); its checkpoints hold norm.* weights."""
    agent = L.Agent(4, frame_stack=1, lstm_hidden_size=16)
    model = agent.state_dict() | {"norm.weight": torch.ones(16), "norm.bias": torch.zeros(16)}
    with pytest.raises(
        L.UsageError,
        match=r"^'ln.pt' does not fit a2c_lstm_atari\.py's network: only the checkpoint "
        r"has norm\.weight\.$",
    ):
        L.load_weights(agent, {"model": model, "path": "ln.pt"})
    assert not hasattr(L.Args(), "lstm_layer_norm") and "lstm_layer_norm" not in L.NETWORK_ARGS


def test_skip_hands_the_heads_the_cnn_features_beside_the_lstm_output(tmp_path):
    import sample

    obs = torch.randint(0, 255, (2, 1, 1, 84, 84), dtype=torch.uint8)  # two different observations
    for skip in (False, True):
        torch.manual_seed(0)
        agent = L.Agent(4, frame_stack=1, lstm_hidden_size=16, skip=skip)
        for param in agent.lstm.parameters():  # an LSTM that outputs 0 whatever it reads
            torch.nn.init.zeros_(param)
        with torch.no_grad():
            logits = [
                agent(o.unsqueeze(0), agent.initial_state(1, CPU), torch.ones(1, 1, dtype=torch.bool))[0] for o in obs
            ]
        # the heads see the observation only through the skip connection
        assert (not torch.allclose(logits[0], logits[1])) == skip

    # a checkpoint of it (the default) plays back (sample.py builds the same network), resumes only with the flag
    out = L.train(tiny_args(L, tmp_path, iterations=1, run_name="skip"))
    summary = sample.play(sample.Args(checkpoint=out["checkpoint"], episodes=1, max_episode_frames=200, cuda=False))
    assert len(summary["episodes"]) == 1
    state = torch.load(out["checkpoint"], weights_only=True) | {"path": "skip.pt"}
    assert (
        state["args"]["lstm_skip"]
        and state["model"]["actor.weight"].shape[1] == state["args"]["lstm_hidden_size"] + 512
    )
    with pytest.raises(L.UsageError, match="trained with --lstm-skip True, not False"):
        L.check_resume(state, tiny_args(L, tmp_path, lstm_skip=False))


def test_a_checkpoint_older_than_the_skip_flag_is_rebuilt_without_the_skip(tmp_path):
    import sys

    from conftest import ROOT

    import sample

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import head_inputs
    import lstm_memory

    out = L.train(tiny_args(L, tmp_path, iterations=1, run_name="plain", lstm_skip=False, max_episode_frames=200))
    state = torch.load(out["checkpoint"], weights_only=True)
    older = state | {"args": {k: v for k, v in state["args"].items() if k != "lstm_skip"}}  # written before it
    torch.save(older, tmp_path / "older.pt")
    summary = sample.play(sample.Args(checkpoint=str(tmp_path / "older.pt"), episodes=1, cuda=False))
    assert len(summary["episodes"]) == 1  # the plain network: the skip one would not load its weights
    L.check_resume(older | {"path": "older.pt"}, tiny_args(L, tmp_path, lstm_skip=False))
    with pytest.raises(L.UsageError, match="trained with --lstm-skip False, not True"):
        L.check_resume(older | {"path": "older.pt"}, tiny_args(L, tmp_path))
    assert len(lstm_memory.play(L, older, "zeroed", episodes=1, seed=0, backend=BACKENDS[0])) == 1
    args = head_inputs.Args(checkpoint=str(tmp_path / "older.pt"), steps=2, num_envs=2, env_backend=BACKENDS[0])
    assert head_inputs.main(args)["l1"] > 0  # its weights loaded into the plain network


def test_compile_takes_the_lstm_into_the_graph_and_learns_the_same_as_eager(tmp_path):
    from torch._dynamo.utils import counters

    updates, graphs = [], []
    for compiled in (False, True):
        counters.clear()
        name = f"compile-{compiled}"
        args = tiny_args(L, tmp_path, iterations=3, run_name=name, compile=compiled, seed=3, checkpoint_every=1)
        L.train(args)
        w = [torch.load(tmp_path / "runs" / name / "checkpoints" / f"iter_{i:06d}.pt")["model"] for i in (1, 2, 3)]
        updates.append([{k: b[k] - a[k] for k in a} for a, b in zip(w, w[1:])])  # the 2nd and 3rd updates
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == 0 and graphs[1] >= 3, graphs  # a graph each for the policy step, the returns, the loss
    breaks = [reason for reason in counters["graph_break"] if "RNN" in reason or "LSTM" in reason]
    assert not breaks, breaks
    # RMSprop moves a weight by ~1e-7 per update here: compare the updates, not the weights (a value
    # coefficient 0.8x in the compiled loss alone puts them 20% apart)
    for eager, compiled in zip(*updates):
        for k in eager:
            assert (compiled[k] - eager[k]).norm() <= 1e-2 * eager[k].norm() + 1e-12, k  # seen: up to 3e-4
