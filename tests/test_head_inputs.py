"""benchmarks/head_inputs.py: the size of what the actor and critic heads read."""

import sys

import torch
from conftest import BACKENDS, ROOT

import a2c_atari as A
import a2c_lstm_atari as L

sys.path.insert(0, str(ROOT / "benchmarks"))
import head_inputs  # noqa: E402


def test_the_lstm_agents_heads_read_its_lstm_output_zeroed_where_a_game_starts():
    torch.manual_seed(0)
    agent = L.Agent(4, frame_stack=2, lstm_hidden_size=8, skip=False)  # the LSTM alone before the heads
    obs = torch.randint(0, 255, (5, 3, 2, 84, 84), dtype=torch.uint8)
    starts = torch.zeros(5, 3, dtype=torch.bool)
    starts[0], starts[2, 1] = True, True  # env 1 starts a new game at step 2
    with torch.no_grad():  # the heads' input, one step at a time, as the agent's step() computes it
        trunk = agent.network(obs.flatten(0, 1).float()).view(5, 3, -1)
        h, c = agent.initial_state(3, torch.device("cpu"))
        outputs = []
        for t in range(5):
            keep = (~starts[t]).float().view(1, -1, 1)
            out, (h, c) = agent.lstm(trunk[t : t + 1], (h * keep, c * keep))
            outputs.append(out[0])
    expected = torch.stack(outputs)
    figures = head_inputs.head_inputs(L, agent, obs, starts)
    assert abs(figures["mean_abs"] - expected.abs().mean().item()) < 1e-6
    assert abs(figures["l1"] - expected.abs().sum(-1).mean().item()) < 1e-5
    assert abs(figures["cnn_mean_abs"] - trunk.abs().mean().item()) < 1e-6


def test_the_feedforward_agents_heads_read_its_trunk():
    torch.manual_seed(0)
    agent = A.Agent(4, frame_stack=2)
    obs = torch.randint(0, 255, (3, 2, 2, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        features = agent.network(obs.flatten(0, 1).float())
    figures = head_inputs.head_inputs(A, agent, obs, torch.zeros(3, 2, dtype=torch.bool))
    assert abs(figures["l1"] - features.abs().sum(-1).mean().item()) < 1e-4 and "cnn_mean_abs" not in figures


def test_random_play_marks_game_starts_and_the_command_reports_both_agents():
    args = L.Args(env_id="Breakout-v5", frame_stack=2, cuda=False, max_episode_frames=16)  # games of 4 steps
    obs, starts, num_actions = head_inputs.random_play(L, args, 12, 2, BACKENDS[0], seed=3)
    assert obs.shape == (12, 2, 2, 84, 84) and obs.dtype == torch.uint8 and num_actions == 4
    # a game starts at 0, runs 4 steps, then a reset step: the next game's first observation is at 5, then 10
    assert starts.nonzero().tolist() == [[0, 0], [0, 1], [5, 0], [5, 1], [10, 0], [10, 1]]
    assert obs[starts][:, 0].eq(0).all() and obs[starts][:, 1].any(dim=(1, 2)).all()  # a new game's stack: one frame
    for script in ["a2c_atari", "a2c_lstm_atari"]:
        result = head_inputs.main(
            head_inputs.Args(script=script, steps=3, num_envs=2, frame_stack=2, env_backend=BACKENDS[0])
        )
        assert result["script"] == script and result["l1"] > 0 and ("cnn_mean_abs" in result) == (script != "a2c_atari")


def test_the_skip_agents_heads_read_both_and_the_gradients_follow_the_paths():
    torch.manual_seed(0)
    obs = torch.randint(0, 255, (4, 2, 1, 84, 84), dtype=torch.uint8)
    starts = torch.zeros(4, 2, dtype=torch.bool)
    figures, grads = {}, {}
    for skip in (False, True):
        torch.manual_seed(0)  # the same trunk and LSTM: only the heads' width differs
        agent = L.Agent(4, frame_stack=1, lstm_hidden_size=8, skip=skip)
        figures[skip] = head_inputs.head_inputs(L, agent, obs, starts)
        torch.nn.init.zeros_(agent.lstm.weight_ih_l0)  # the LSTM no longer reads the trunk
        grads[skip] = head_inputs.gradients(L, agent, obs, starts, seed=0)
    # with the skip the heads read the LSTM output and the CNN's 512 features
    plain = figures[False]
    assert abs(figures[True]["l1"] - (plain["l1"] + 512 * plain["cnn_mean_abs"])) < 1e-3 * figures[True]["l1"]
    for output in ("values", "logits"):
        assert grads[False][output]["trunk"] == 0  # its only path to the heads is cut
        assert grads[True][output]["trunk"] > 0  # the skip connection still carries the gradient
        assert grads[False][output]["under_eps"] == 1.0  # a trunk without gradient: every weight's is under eps
    # under_eps is the share of the trunk's weights whose squared gradient is under eps, here for the values
    logits, values, _ = agent(obs, agent.initial_state(2, torch.device("cpu")), starts)
    values.backward(torch.randn(values.shape, generator=torch.Generator().manual_seed(0)) / values.numel())
    trunk = torch.cat([p.grad.flatten() for p in agent.network.parameters()])
    share = (trunk.square() < 1e-5).float().mean().item()
    assert 0.6 < share < 0.95 and grads[True]["values"]["under_eps"] == share  # neither none nor all


def test_a_checkpoints_optimizer_state_is_read_part_by_part():
    agent = L.Agent(4, frame_stack=1, lstm_hidden_size=8)
    optimizer = L.RMSpropTF(agent.parameters(), lr=1e-3)
    for param in agent.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()  # the mean squares start at one and decay: 0.99 after one zero gradient
    for param in agent.lstm.parameters():
        optimizer.state[param]["square_avg"].zero_()  # below eps: the LSTM alone
    figures = head_inputs.optimizer_under_eps(agent, optimizer.state_dict())
    assert figures == {"trunk": 0.0, "lstm": 1.0, "actor": 0.0, "critic": 0.0}
