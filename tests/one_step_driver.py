"""One gradient step of each script's loss on a fixed batch, for tests/test_distributed.py: run alone
it takes the whole batch; as one of torchrun's processes it takes its share (half the rows, or half
the envs for the LSTM) and sums over processes as train() does. Saves the parameters after the step.

    python tests/one_step_driver.py OUT_DIR            # or under torchrun
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import a2c_atari  # noqa: E402
import a2c_lstm_atari  # noqa: E402
import ppo_atari  # noqa: E402

out = Path(sys.argv[1])
world = int(os.environ.get("WORLD_SIZE", 1))
rank = int(os.environ.get("RANK", 0))
if world > 1:
    dist.init_process_group("gloo")
over = ppo_atari.sum_over_processes  # the identity in one process
g = torch.Generator().manual_seed(0)
N = 32
obs = torch.randint(0, 255, (N, 4, 84, 84), dtype=torch.uint8, generator=g)
actions = torch.randint(0, 4, (N,), generator=g)
valid = torch.ones(N)
valid[[0, 1, 2, 5, 7, 20]] = 0  # 5 invalid steps in the first half, 1 in the second: uneven counts
advantages, returns = torch.randn(N, generator=g) * 3 + 1, torch.randn(N, generator=g)
rows = slice(rank * N // world, (rank + 1) * N // world)


def finish(module, agent, optimizer, loss, figures):
    optimizer.zero_grad()
    loss.backward()
    if over is not None:
        module.sum_gradients(agent)
    grads = {name: p.grad.clone() for name, p in agent.named_parameters()}  # before the (scale-free) clip
    torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
    optimizer.step()
    if module.SCRIPT == "ppo_atari":  # ppo_loss leaves its figures as this process's parts; ppo_update sums them
        figures = {k: over(v) for k, v in figures.items()}
    figures = {k: float(v) for k, v in figures.items()}
    torch.save(
        {"params": agent.state_dict(), "grads": grads, "figures": figures}, out / f"{module.SCRIPT}_{world}_{rank}.pt"
    )


# PPO: clipped losses with normalised advantages over the whole minibatch
torch.manual_seed(0)
agent = ppo_atari.Agent(4)
with torch.no_grad():
    logits, values = agent(obs)
    old_logprobs = torch.distributions.Categorical(logits=logits).log_prob(actions) + 0.3 * torch.randn(N, generator=g)
optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-5)
loss, figures = ppo_atari.ppo_loss(
    agent,
    obs[rows],
    actions[rows],
    old_logprobs[rows],
    advantages[rows],
    returns[rows],
    values[rows] + 0.2,
    valid[rows],
    clip_coef=0.1,
    clip_vloss=True,
    norm_adv=True,
    ent_coef=0.01,
    vf_coef=0.5,
    over_processes=over,
)
finish(ppo_atari, agent, optimizer, loss, figures)

# A2C: one step of TF-style RMSprop, normalised advantages
for module in (a2c_atari,):
    torch.manual_seed(0)
    agent = module.Agent(4)
    optimizer = module.RMSpropTF(agent.parameters(), lr=7e-4)
    loss, figures = module.a2c_loss(
        *agent(obs[rows]),
        actions[rows],
        advantages[rows],
        returns[rows],
        valid[rows],
        value_loss="mse",
        norm_adv=True,
        ent_coef=0.01,
        vf_coef=0.5,
        over_processes=over,
    )
    finish(module, agent, optimizer, loss, figures)

# LSTM: each process unrolls its own envs (columns) from their own state
T, E = 8, 4
torch.manual_seed(0)
agent = a2c_lstm_atari.Agent(4, 1, 16)
seq = torch.randint(0, 255, (T, E, 1, 84, 84), dtype=torch.uint8, generator=g)
starts = torch.rand(T, E, generator=g) < 0.2
state = (torch.randn(1, E, 16, generator=g), torch.randn(1, E, 16, generator=g))
cols = slice(rank * E // world, (rank + 1) * E // world)
seq_valid, seq_actions = valid[: T * E].view(T, E), actions[: T * E].view(T, E)
seq_adv, seq_returns = advantages[: T * E].view(T, E), returns[: T * E].view(T, E)
seq_logits, seq_values, _ = agent(seq[:, cols], (state[0][:, cols], state[1][:, cols]), starts[:, cols])
optimizer = a2c_lstm_atari.RMSpropTF(agent.parameters(), lr=7e-4)
loss, figures = a2c_lstm_atari.a2c_loss(
    seq_logits.flatten(0, 1),
    seq_values.flatten(),
    seq_actions[:, cols].flatten(),
    seq_adv[:, cols].flatten(),
    seq_returns[:, cols].flatten(),
    seq_valid[:, cols].flatten(),
    value_loss="mse",
    norm_adv=True,
    ent_coef=0.01,
    vf_coef=0.5,
    over_processes=over,
)
finish(a2c_lstm_atari, agent, optimizer, loss, figures)

# target_kl: the early stop is decided on the whole minibatch's KL, so every process takes as many steps
collecting_logprobs = torch.distributions.Categorical(logits=logits).log_prob(actions)  # KL 0 at first
torch.manual_seed(0)
agent = ppo_atari.Agent(4).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(agent.parameters(), lr=3e-2, eps=1e-5)
batch = {
    "frames": obs[rows].permute(0, 2, 3, 1).contiguous(),
    "actions": actions[rows],
    "old_logprobs": collecting_logprobs[rows],
    "advantages": advantages[rows],
    "returns": returns[rows],
    "old_values": values[rows],
    "valid": valid[rows],
}
torch.manual_seed(rank)  # different minibatch orders on each process
args = ppo_atari.Args(update_epochs=8, num_minibatches=2, target_kl=0.02)
ppo_atari.ppo_update(agent, optimizer, ppo_atari.ppo_loss, batch, args, N // world // 2, over)
steps = int(optimizer.state[agent.actor.weight]["step"])
torch.save({"params": agent.state_dict(), "steps": steps}, out / f"target_kl_{world}_{rank}.pt")
if world > 1:
    dist.destroy_process_group()
