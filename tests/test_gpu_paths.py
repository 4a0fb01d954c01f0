"""The CUDA paths' defects that a CPU can show: the LSTM kept fp32 under bf16, one sentence for too few
GPUs, each process's own CUDA random state, TF-RMSprop in foreach kernels, sample.py's agent layout."""

import collections
import time

import pytest
import torch
from conftest import tiny_args
from torch.utils._python_dispatch import TorchDispatchMode

import a2c_atari as A
import a2c_lstm_atari as L
import sample

CUDA1 = torch.device("cuda", 1)


def test_lstm_runs_in_fp32_outside_bf16_autocast_while_the_convolutions_run_in_bf16(monkeypatch):
    seen = {"lstm_in": [], "lstm_out": [], "conv": []}
    lstm_forward, conv_forward = torch.nn.LSTM.forward, torch.nn.Conv2d._conv_forward

    def lstm_spy(self, x, hx=None):
        out, (h, c) = lstm_forward(self, x, hx)
        seen["lstm_in"] += [x.dtype, hx[0].dtype, hx[1].dtype]
        seen["lstm_out"] += [out.dtype, h.dtype, c.dtype]
        return out, (h, c)

    def conv_spy(self, x, weight, bias):
        out = conv_forward(self, x, weight, bias)
        seen["conv"].append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.LSTM, "forward", lstm_spy)
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", conv_spy)
    torch.manual_seed(0)
    agent = L.Agent(4, 1, 16)
    obs = torch.randint(0, 255, (2, 3, 1, 84, 84), dtype=torch.uint8)
    with L.autocast(L.Args(autocast="bf16"), torch.device("cpu")):
        logits, values, _ = agent(obs, agent.initial_state(3, torch.device("cpu")), torch.zeros(2, 3, dtype=torch.bool))
    assert set(seen["conv"]) == {torch.bfloat16}
    assert set(seen["lstm_in"]) == set(seen["lstm_out"]) == {torch.float32}
    assert logits.dtype == values.dtype == torch.float32


def test_more_processes_per_node_than_gpus_is_one_sentence_before_any_rendezvous(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.distributed, "rendezvous", lambda *a, **k: pytest.fail("no rendezvous expected"))
    for rank in (0, 1):  # every process refuses, so none waits for the others
        procs = A.Processes(rank=rank, world_size=2, local_rank=rank, local_world_size=2)
        with pytest.raises(A.UsageError, match="2 processes per node need as many GPUs, but 1 are visible"):
            A.join_processes(procs, A.Args())


def test_a_process_saves_and_restores_its_own_gpu_random_state_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or torch.ones(3))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", device, state.sum())))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state saved"))
    state = A.rng_state(CUDA1)
    assert calls == [("get", CUDA1)] and torch.equal(state["cuda"], torch.ones(3))
    A.set_rng_state(state, CUDA1)
    assert calls[-1] == ("set", CUDA1, 3)
    calls.clear()
    assert "cuda" not in A.rng_state(torch.device("cpu")) and not calls  # --no-cuda: CUDA is never touched


def test_a_resume_without_the_gpu_random_state_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a: pytest.fail("nothing to restore"))
    A.set_rng_state({"torch": torch.get_rng_state()}, CUDA1)
    assert "no CUDA random state" in capsys.readouterr().err


class AtenOps(TorchDispatchMode):
    """Counts the kernels (aten operators) run under it, by name."""

    def __enter__(self):
        self.ops = collections.Counter()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("module", [A, L])
def test_tf_rmsprop_in_foreach_kernels_equals_the_per_parameter_loop(module):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in [(5, 3), (7,), (2,)]]
    reference = [p.detach().clone() for p in params]
    square_avgs = [torch.ones_like(p) for p in params]
    optimizer = module.RMSpropTF(params, lr=7e-4, alpha=0.99, eps=1e-5)
    for step in range(5):
        grads = [torch.randn_like(p) * 10**-step for p in params]
        for p, g in zip(params, grads):
            p.grad = None if (step == 2 and p is params[2]) else g.clone()  # a parameter without gradient is left alone
        with AtenOps() as kernels:
            optimizer.step()
        # one foreach kernel per operation over all parameters, not one per parameter; the mean squares' starting
        # ones are made at the first step only (the profiler's markers are no kernels)
        made = kernels.ops.pop("ones_like", 0)
        assert made == (3 if step == 0 else 0), str(dict(kernels.ops))
        arithmetic = {op: n for op, n in kernels.ops.items() if "record_function" not in op}
        assert len(arithmetic) == 5 and all(op.startswith("_foreach_") for op in arithmetic), str(dict(kernels.ops))
        assert set(arithmetic.values()) == {1}, str(dict(kernels.ops))
        for i, (r, s, g) in enumerate(zip(reference, square_avgs, grads)):
            if step == 2 and i == 2:
                continue
            s.mul_(0.99).addcmul_(g, g, value=0.01)
            r.addcdiv_(g, s.add(1e-5).sqrt(), value=-7e-4)
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-7)


def test_sample_holds_the_agent_channels_last_as_training_does(tmp_path, monkeypatch):
    checkpoint = A.train(tiny_args(A, tmp_path, iterations=1, run_name="trained"))["checkpoint"]
    agents = []
    play_games = sample.play_games
    monkeypatch.setattr(
        sample,
        "play_games",
        lambda args, module, agent, *rest: agents.append(agent) or play_games(args, module, agent, *rest),
    )
    sample.play(sample.Args(checkpoint=checkpoint, episodes=1, max_episode_frames=200, cuda=False, env_backend="ale"))
    weight = agents[0].network[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


SYNCS = ["item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__"]


def test_sync_budget_one_copy_of_actions_per_env_group_step_and_one_of_figures_per_update(
    script, tmp_path, monkeypatch
):
    """Calls that wait for a GPU (.item(), .tolist(), .cpu(), .numpy(), .nonzero(), bool(), float(), int(), a
    tensor as an index), counted per iteration as the difference between a 2- and a 4-iteration run, so
    start-up and the end of the run do not count."""
    counts = collections.Counter()
    for name in SYNCS:

        def counting(self, *args, _name=name, _method=getattr(torch.Tensor, name), **kwargs):
            counts[_name] += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    real_nonzero = torch.nonzero
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: counts.update(["nonzero"]) or real_nonzero(*a, **k))
    runs = []
    for iterations in (2, 4):
        counts.clear()
        script.train(tiny_args(script, tmp_path, iterations=iterations, run_name=f"syncs{iterations}"))
        runs.append(collections.Counter(counts))
    per_iteration = {name: (runs[1][name] - runs[0][name]) / 2 for name in SYNCS}
    args = tiny_args(script, tmp_path)
    groups = 2 if args.overlap and args.num_envs > 1 else 1
    copies = args.num_steps * groups  # each group's actions, each step: action.cpu().numpy()
    assert (per_iteration.pop("cpu"), per_iteration.pop("numpy")) == (copies, copies), str(per_iteration)
    assert sum(per_iteration.values()) <= 1, str({k: v for k, v in per_iteration.items() if v})  # the figures, once


def test_sps_after_warmup_leaves_out_a_slow_first_iteration(script, tmp_path, monkeypatch, capsys):
    class Clock:  # the script's clock: the first rollout takes 100 s (as CUDA start-up, autotuning or
        now = 1000.0  # compilation would), every later one 1 s, and nothing else takes any time
        strftime = staticmethod(time.strftime)

        def time(self):
            return self.now

    clock, collect = Clock(), script.collect_rollout

    def timed_collect(*args, **kwargs):
        clock.now += 100.0 if clock.now == 1000.0 else 1.0
        return collect(*args, **kwargs)

    monkeypatch.setattr(script, "time", clock)
    monkeypatch.setattr(script, "collect_rollout", timed_collect)
    out = script.train(tiny_args(script, tmp_path, iterations=5, run_name="warm", log_interval=1e-6))
    assert out["sps_after_warmup"] > 10 * out["sps"]
    progress = [
        float(line.split("SPS ")[1].split(" |")[0].replace(",", ""))
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("step ")
    ]
    assert progress[-1] > 10 * out["sps"]  # the progress line reads the last window, not the average from the start


def test_under_torchrun_games_and_the_stop_flag_are_agreed_every_few_iterations_not_every_one(tmp_path, monkeypatch):
    gathers, reductions = [], []

    def all_gather(item, procs):  # the other process finishes one game (7.0) per gather
        gathers.append(item)
        return [item, [(7.0, 70)] if isinstance(item, list) else item]

    monkeypatch.setattr(A, "all_gather", all_gather)
    monkeypatch.setattr(A, "sum_over_processes", lambda x: reductions.append(x) or x)
    args = tiny_args(A, tmp_path, iterations=20, run_name="gather")
    agent = A.Agent(4)
    procs = A.Processes(rank=0, world_size=2, local_rank=0, local_world_size=2)  # rank 0 of two, simulated
    with A.RunLog(args, tmp_path / "run", None, agent, torch.optim.Adam(agent.parameters()), 4, None, procs) as run:
        gathers.clear()
        for iteration in range(1, 21):
            run.log_iteration(iteration, iteration * 10, [(1.0, 10)], 1e-3, {"loss": 0.0, "grad_norm": 0.0})
            assert not run.stop_requested(iteration)
    assert len(gathers) == len(reductions) == 3  # iterations 8, 16 and the last, 20
    assert gathers[0] == [(1.0, 10)] * 8  # nothing is lost between gathers
    assert run.episodes == 20 + 3  # every game of this process, and the other process's at each gather


def test_every_process_agrees_that_the_last_iteration_was_already_evaluated(tmp_path, monkeypatch):
    """finish() evaluates once more only where no evaluation ran at the last step; evaluate() is a
    collective, so a process other than rank 0 must reach the same decision or the run hangs."""
    reductions = []
    monkeypatch.setattr(A, "all_gather", lambda item, procs: [item, item])
    monkeypatch.setattr(A, "sum_over_processes", lambda x: reductions.append(x) or x)
    monkeypatch.setattr(A.dist, "barrier", lambda: None)
    args = tiny_args(A, tmp_path, iterations=2, run_name="agree", eval_every=10)
    agent = A.Agent(4)
    procs = A.Processes(rank=1, world_size=2, local_rank=1, local_world_size=2)  # rank 1 of two, simulated
    with A.RunLog(args, tmp_path / "run", None, agent, torch.optim.Adam(agent.parameters()), 4, None, procs) as run:
        assert not run.evaluate(20)  # rank 1 plays nothing, but takes part in the agreement
        run.finish(2, 20)
    assert len(reductions) == 1  # no second evaluation (rank 0, which played at step 20, would not join it)
