"""--autocast bf16: the network's convolutions and matrix products run in bfloat16 in the rollout
and the update, while the weights, gradients, optimizer state and the losses stay fp32."""

import torch
from conftest import tiny_args


def test_bf16_autocast_runs_the_network_in_bf16_and_keeps_fp32_state(script, tmp_path, monkeypatch):
    seen = []  # dtypes of the first convolution's outputs, in the rollout and the update
    forward = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        out = forward(self, x, weight, bias)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    outs = {}
    for mode in ("off", "bf16"):
        seen.clear()
        out = script.train(tiny_args(script, tmp_path, iterations=2, run_name=mode, autocast=mode))
        outs[mode] = torch.load(out["checkpoint"], weights_only=True)
        assert set(seen) == {torch.bfloat16 if mode == "bf16" else torch.float32}
    state = outs["bf16"]
    assert all(w.dtype == torch.float32 and w.isfinite().all() for w in state["model"].values())
    assert all(
        v.dtype == torch.float32
        for s in state["optimizer"]["state"].values()
        for v in s.values()
        if torch.is_tensor(v) and v.is_floating_point()
    )
    assert not all(torch.equal(state["model"][k], outs["off"]["model"][k]) for k in state["model"])


def test_bf16_outputs_reach_the_distributions_in_fp32(script):
    agent, obs = make_agent(script)
    with torch.no_grad(), script.autocast(script.Args(autocast="bf16"), torch.device("cpu")):
        outputs = agent(*obs)
    assert outputs[0].dtype == outputs[1].dtype == torch.float32


def make_agent(script):
    torch.manual_seed(0)
    obs = torch.randint(0, 255, (3, 4 if script.SCRIPT != "a2c_lstm_atari" else 1, 84, 84), dtype=torch.uint8)
    if script.SCRIPT == "a2c_lstm_atari":
        agent = script.Agent(4, 1, 16)
        state = agent.initial_state(3, torch.device("cpu"))
        return agent, (obs.unsqueeze(0), state, torch.zeros(1, 3, dtype=torch.bool))
    return script.Agent(4), (obs,)
