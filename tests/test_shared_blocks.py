"""The blocks every training script holds (game ids, env protocol, episode statistics, frame stack,
returns): one behaviour per test, run against every script so the copies cannot drift."""

import ast
import collections
import functools
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import BACKENDS, ROOT, SCRIPTS

DIVIDER = "harness: the same text in every script below this line"


def harness(script_name):
    """The text below the divider line (the divider included)."""
    src = (ROOT / f"{script_name}.py").read_text()
    assert src.count(DIVIDER) == 1, f"{script_name}.py needs exactly one divider line"
    return src[src.rindex("\n", 0, src.index(DIVIDER)) :]


def test_the_harness_below_the_divider_is_byte_identical_in_every_script():
    first = harness(SCRIPTS[0])
    drifted = [s for s in SCRIPTS[1:] if harness(s) != first]
    assert not drifted, f"the harness of {drifted} differs from {SCRIPTS[0]}.py's: copy it below the divider"
    for name in ["check_common_args", "AtariEnvs", "evaluate", "write_checkpoint", "join_processes", "RunLog", "main"]:
        assert f"\ndef {name}(" in first or f"\nclass {name}" in first, f"{name} belongs to the harness"
    for name in ["Agent", "compute_gae", "collect_rollout", "train"]:  # the algorithm stays above the line
        assert f"\ndef {name}(" not in first and f"\nclass {name}(" not in first, f"{name} belongs above the divider"


# Every name defined in more than one script must be the same text in each, except these.
DIFFERS_ON_PURPOSE = {
    "SCRIPT": "each script's own name",
    "NETWORK_ARGS": "the LSTM's hidden size, output LayerNorm and skip connection are part of its network",
    "Args": "the algorithm's flags differ; the common sections are compared field by field below",
    "check_args": "each algorithm's own flags (the common ones are check_common_args)",
    "Agent": "the LSTM network (the feed-forward scripts share theirs: FEEDFORWARD_SHARED)",
    "policy_step": "carries the LSTM state",
    "RolloutBuffer": "also holds the episode starts and the LSTM state at the rollout's start",
    "collect_rollout": "carries the LSTM state and records episode starts",
    "send_actions": "advances the group's columns of the LSTM state",
    "evaluation_policy": "carries the LSTM state",
    "learning_rate_at": "PPO's anneals per iteration to 0 (CleanRL's schedule), A2C's per step to --lr-final",
    "train": "the learning code itself, which is what differs between the algorithms",
}
FEEDFORWARD_SHARED = [
    "NETWORK_ARGS",
    "Agent",
    "policy_step",
    "RolloutBuffer",
    "collect_rollout",
    "send_actions",
    "receive_step",
    "evaluation_policy",
]
# Common Args fields that one script sets apart on purpose, and why.
COMMON_ARGS_DIFFER = {("a2c_lstm_atari", "frame_stack"): "its help says why 4 frames, not 1"}


@functools.lru_cache(maxsize=None)
def top_level_sources(script_name):
    """Source text of every top-level function, class and assignment, by name."""
    src = (ROOT / f"{script_name}.py").read_text()
    sources = {}
    for node in ast.parse(src).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            sources[node.name] = ast.get_source_segment(src, node)
        elif isinstance(node, ast.Assign):
            sources.update({t.id: ast.get_source_segment(src, node) for t in node.targets})
    return sources


def names_in_several_scripts():
    counts = collections.Counter(n for s in SCRIPTS for n in top_level_sources(s))
    return sorted(n for n, c in counts.items() if c > 1)


@pytest.mark.parametrize("name", sorted(set(names_in_several_scripts()) - DIFFERS_ON_PURPOSE.keys()))
def test_every_definition_shared_by_name_is_the_same_text(name):
    texts = {s: top_level_sources(s).get(name) for s in SCRIPTS}
    texts = {s: t for s, t in texts.items() if t is not None}
    first = next(iter(texts))
    drifted = [s for s, t in texts.items() if t != texts[first]]
    assert not drifted, f"{name} differs between {first}.py and {drifted}; make them one text or list it as differing"


def test_names_listed_as_differing_are_real():
    assert DIFFERS_ON_PURPOSE.keys() <= set(names_in_several_scripts())


def common_args_fields(script_name):
    """{field: its source lines with the docstring} for the Args fields from `# --- experiment` on."""
    src = (ROOT / f"{script_name}.py").read_text()
    cls = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == "Args")
    lines = src.splitlines()
    begin = next(i for i in range(cls.lineno, cls.end_lineno) if lines[i].strip().startswith("# --- experiment"))
    fields, body = {}, cls.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and node.lineno > begin:
            doc = body[i + 1] if i + 1 < len(body) and isinstance(body[i + 1], ast.Expr) else node
            fields[node.target.id] = "\n".join(lines[node.lineno - 1 : doc.end_lineno])
    return fields


def test_args_common_sections_are_the_same_fields_in_every_script():
    fields = {s: common_args_fields(s) for s in SCRIPTS}
    reference = fields[SCRIPTS[0]]
    assert {"seed", "resume", "keep_checkpoints", "env_id", "max_episode_frames"} <= reference.keys()
    for s in SCRIPTS[1:]:
        assert fields[s].keys() == reference.keys(), s
        drifted = [n for n in reference if fields[s][n] != reference[n] and (s, n) not in COMMON_ARGS_DIFFER]
        assert not drifted, f"{s}.py's Args differs from {SCRIPTS[0]}.py's in {drifted}"


# --- game ids ---------------------------------------------------------------------------------


def test_gymnasium_id_forms_name_the_same_game(script):
    forms = ["Breakout-v5", "ALE/Breakout-v5", "BreakoutNoFrameskip-v4", "Breakout-v4", "breakout"]
    assert {script.atari_game(f) for f in forms} == {"breakout"}


def test_camel_case_games_map_to_rom_names(script):
    assert script.atari_game("SpaceInvaders-v5") == "space_invaders"
    assert script.atari_game("MsPacmanNoFrameskip-v4") == "ms_pacman"
    assert script.atari_game("ALE/BeamRider-v5") == "beam_rider"


def test_unknown_game_is_a_usage_error(script):
    with pytest.raises(script.UsageError, match="not an Atari game"):
        script.atari_game("NotAGame-v5")


# --- episode statistics -----------------------------------------------------------------------


def step(stats, rewards, terminated=(False,), truncated=(False,), lives=(3,)):
    return stats.update(np.array(rewards, np.float32), np.array(terminated), np.array(truncated), np.array(lives))


def test_life_loss_does_not_end_the_logged_game(script):
    stats = script.EpisodeStats(1, np.array([3]))
    step(stats, [5.0], lives=[3])
    valid, life_lost, returns, _ = step(stats, [2.0], lives=[2])
    assert life_lost.tolist() == [True] and valid.tolist() == [True]
    assert returns.size == 0  # the game goes on
    _, _, returns, lengths = step(stats, [10.0], terminated=[True], lives=[0])
    assert returns.tolist() == [17.0] and lengths.tolist() == [3]  # raw score of all lives


def test_game_over_reports_raw_unclipped_score_and_restarts(script):
    stats = script.EpisodeStats(1, np.array([1]))
    _, _, returns, _ = step(stats, [400.0], terminated=[True], lives=[0])
    assert returns.tolist() == [400.0]
    valid, life_lost, returns, _ = step(stats, [0.0], lives=[5])  # the backend's reset step
    assert valid.tolist() == [False] and life_lost.tolist() == [False] and returns.size == 0
    _, _, returns, lengths = step(stats, [7.0], terminated=[True], lives=[0])
    assert returns.tolist() == [7.0] and lengths.tolist() == [1]


def test_truncation_reports_the_game_and_nothing_leaks_into_the_next(script):
    stats = script.EpisodeStats(2, np.array([3, 3]))
    step(stats, [1.0, 2.0], [False, False], [False, False], [3, 3])
    _, _, returns, lengths = step(stats, [1.0, 2.0], [False, False], [True, False], [3, 3])
    assert returns.tolist() == [2.0] and lengths.tolist() == [2]
    step(stats, [0.0, 0.0], [False, False], [False, False], [3, 3])  # env 0 resets here
    _, _, returns, lengths = step(stats, [3.0, 0.0], [True, True], [False, False], [0, 0])
    assert returns.tolist() == [3.0, 4.0] and lengths.tolist() == [1, 4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_games_scores_are_sums_of_raw_rewards_between_game_ends(script, backend):
    envs = script.AtariEnvs("breakout", backend, 4, seed=3, max_episode_frames=1000)
    try:
        _, lives = envs.reset()
        stats = script.EpisodeStats(4, lives)
        rng = np.random.default_rng(0)
        running, reported, kinds = np.zeros(4), [], set()
        ended = np.zeros(4, bool)
        for _ in range(700):
            _, raw, term, trunc, lives = envs.step(rng.integers(0, envs.num_actions, 4))
            running += raw * ~ended
            valid, life_lost, returns, _ = stats.update(raw, term, trunc, lives)
            assert valid.tolist() == (~ended).tolist()
            ended = (term | trunc) & valid
            kinds |= {"game over"} if term.any() else set()
            kinds |= {"truncation"} if trunc.any() else set()
            kinds |= {"life loss"} if life_lost.any() else set()
            assert np.allclose(returns, running[ended])
            reported.extend(returns)
            running[ended] = 0.0
        assert kinds == {"game over", "truncation", "life loss"}
        assert len(reported) >= 8
    finally:
        envs.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_give_the_same_protocol(script, backend):
    envs = script.AtariEnvs("breakout", backend, 2, seed=1, sticky_actions=0.25, full_action_space=True)
    try:
        frames, lives = envs.reset()
        assert frames.shape == (2, 84, 84) and frames.dtype == np.uint8
        assert lives.tolist() == [5, 5] and envs.num_actions == 18
    finally:
        envs.close()
    envs = script.AtariEnvs("breakout", backend, 2, seed=1)
    assert envs.num_actions == 4  # minimal action set by default
    envs.close()


# --- memory -------------------------------------------------------------------------------------

FAULTS_PROBE = """
import resource, sys, torch, torch.nn as nn
sys.path.insert(0, {root!r})
__import__({script!r}).keep_freed_memory()
net = nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                    nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512))
net = net.to(memory_format=torch.channels_last)  # as the scripts' networks and observations
obs = torch.randint(0, 255, (256, 84, 84, 4), dtype=torch.uint8).permute(0, 3, 1, 2)
for step in range(12):
    if step == 4:  # the first steps grow the heap; count the steady state
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(obs.float()).square().mean().backward()  # one minibatch's forward and backward passes
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_update_steps_reuse_freed_memory_instead_of_page_faulting(script):
    # Without keep_freed_memory, these 8 steps page-fault 50,000-100,000 times on glibc 2.36
    # (activations unmapped and faulted back in); with it, the freed blocks are reused.
    code = FAULTS_PROBE.format(root=str(ROOT), script=script.__name__)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out.split()[-1]) < 10_000


# --- frame stack --------------------------------------------------------------------------------


def test_frame_stack_keeps_the_last_frames_in_order(script):
    stack = script.FrameStack(2, 4, torch.device("cpu"))
    for value in range(1, 6):
        obs = stack.push(torch.full((2, 84, 84), value, dtype=torch.uint8), torch.zeros(2, dtype=torch.bool))
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.uint8
    assert obs[:, :, 0, 0].tolist() == [[2, 3, 4, 5]] * 2


def test_frame_stack_zeroes_history_of_an_env_whose_episode_started(script):
    stack = script.FrameStack(2, 4, torch.device("cpu"))
    for value in range(1, 5):
        stack.push(torch.full((2, 84, 84), value, dtype=torch.uint8), torch.zeros(2, dtype=torch.bool))
    obs = stack.push(torch.full((2, 84, 84), 9, dtype=torch.uint8), torch.tensor([False, True]))
    assert obs[0, :, 0, 0].tolist() == [2, 3, 4, 9]
    assert obs[1, :, 0, 0].tolist() == [0, 0, 0, 9]
    assert obs.is_contiguous(memory_format=torch.channels_last)


# --- returns --------------------------------------------------------------------------------------


def test_gae_with_lambda_one_gives_n_step_returns_cut_at_episode_end(script):
    # one env, 4 steps, the episode ends on the transition taken at step 1
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    values = torch.tensor([[0.5], [0.25], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    last_value = torch.tensor([10.0])
    advantages, returns = script.compute_gae(rewards, values, dones, last_value, 0.9, 1.0)
    expected = [1 + 0.9 * 2, 2.0, 3 + 0.9 * 4 + 0.81 * 10, 4 + 0.9 * 10]
    assert torch.allclose(returns[:, 0], torch.tensor(expected))
    assert torch.allclose(advantages, returns - values)


def test_gae_matches_the_recursive_definition(script):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    dones = (torch.rand(6, 3, generator=g) < 0.3).float()
    last_value = torch.randn(3, generator=g)
    gamma, lam = 0.99, 0.95
    advantages, returns = script.compute_gae(rewards, values, dones, last_value, gamma, lam)
    next_values = torch.cat([values[1:], last_value[None]])
    deltas = rewards + gamma * next_values * (1 - dones) - values
    for t in range(6):  # A_t = sum_k (gamma*lam)^k delta_{t+k}, stopping after an episode end
        expected, factor = torch.zeros(3), torch.ones(3)
        for k in range(t, 6):
            expected += factor * deltas[k]
            factor = factor * gamma * lam * (1 - dones[k])
        assert torch.allclose(advantages[t], expected, atol=1e-6)
    assert torch.allclose(returns, advantages + values)


def test_truncation_bootstrap_adds_discounted_value_of_the_final_observation(script):
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    values = torch.tensor([[0.0, 0.0], [5.0, 0.0]])  # step 1 of env 0 sees the final observation
    truncations = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = script.bootstrap_truncations(rewards, values, torch.tensor([0.0, 7.0]), truncations, 0.5)
    assert out.tolist() == [[1.0 + 2.5, 1.0], [0.0, 1.0 + 3.5]]


def test_feedforward_scripts_share_network_and_rollout_text():
    present = [s for s in ("ppo_atari", "a2c_atari") if s in SCRIPTS]
    if len(present) < 2:
        pytest.skip("needs both feed-forward scripts")
    a, b = (top_level_sources(s) for s in present)
    assert [n for n in FEEDFORWARD_SHARED if a[n] != b[n]] == []
