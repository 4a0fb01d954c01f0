"""The docs cannot rot: README.md and docs/*.md link only to files that exist, their commands name
scripts and flags that exist, and the README's results table says what the reports it links to say.

Fast: nothing trains; each script's `--help` runs once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9-]*")
PINNED_CHECKOUT = re.compile(r"^\s*git checkout [0-9a-f]{7,40}\b", re.MULTILINE)


def code_blocks(text: str) -> list[str]:
    """The bodies of the page's fenced code blocks."""
    return [match.group(2) for match in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The page without its code blocks, inline code and HTML comments: where its links are."""
    text = FENCE.sub("", text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def test_every_relative_link_and_image_points_at_a_file():
    """Every [text](target) and ![alt](target) in README.md and docs/*.md that is not a web address
    names a file or folder of the repository, relative to the page (an #anchor is not checked)."""
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto: outside the repo; an anchor within the page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


@functools.lru_cache(maxsize=None)
def help_flags(script: str) -> frozenset[str]:
    """Every --flag that `python <script> --help` prints (tyro lists `--x, --no-x` for booleans)."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
    return frozenset(FLAG.findall(result.stdout))


def commands(block: str) -> list[list[str]]:
    """The block's command lines as words: continuation lines joined, comments dropped."""
    lines = re.sub(r"\\\n", " ", block).splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def script_call(words: list[str]) -> tuple[str, list[str]] | None:
    """(the .py file, its arguments) for `python x.py ...`, `python -m torch.distributed.run ... x.py
    ...` and `torchrun ... x.py ...` (leading VAR=value assignments skipped); None for other commands."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if not words:
        return None
    if words[0] in ("python", "python3") and len(words) > 1 and words[1] != "-m":
        return (words[1], words[2:]) if words[1].endswith(".py") else None
    launcher = words[0] == "torchrun" or words[:3] in (
        ["python", "-m", "torch.distributed.run"],
        ["python3", "-m", "torch.distributed.run"],
    )
    if launcher:
        for i, word in enumerate(words):
            if word.endswith(".py"):
                return word, words[i + 1 :]
    return None


def flags_of(arguments: list[str]) -> list[str]:
    """The flag names among a command's arguments: `--x value`, `--x=value`, `--no-x`."""
    return [word.split("=", 1)[0] for word in arguments if word.startswith("--")]


def until_flag(words: list[str]) -> list[str]:
    """The words before the next --flag: a list-valued flag's values."""
    taken = []
    for word in words:
        if word.startswith("--"):
            break
        taken.append(word)
    return taken


def script_args_problems(script: str, arguments: list[str]) -> list[str]:
    """benchmarks/run.py passes --script-args to each script of --scripts: those flags must be theirs."""
    inner, scripts = [], []
    for i, word in enumerate(arguments):
        if word.startswith("--script-args="):
            inner += shlex.split(word.split("=", 1)[1])
        elif word == "--script-args" and i + 1 < len(arguments):
            inner += shlex.split(arguments[i + 1])
        elif word == "--scripts":
            scripts += until_flag(arguments[i + 1 :])
    problems = []
    for name in scripts:
        target = f"{name}.py"
        if not (ROOT / target).is_file():
            problems.append(f"{script} --scripts names {target}, which does not exist")
            continue
        problems += [
            f"{script} --script-args: {target} has no {flag}"
            for flag in flags_of(inner)
            if flag not in help_flags(target)
        ]
    return problems


def test_every_command_names_an_existing_script_and_only_its_flags():
    """Every `python x.py ...`, `python -m torch.distributed.run ... x.py ...` and `torchrun ... x.py
    ...` in a fenced code block of README.md or docs/*.md names a file of the repository and only
    flags that the file's --help lists; for benchmarks/run.py the flags inside --script-args must be
    those of each script in --scripts. A script given by an absolute path lies outside the repository
    (a peer's, such as CleanRL's) and is not checked. A code block with a `git checkout <sha>` line
    runs its commands at that commit, whose flags may since have been removed (the LSTM study's
    LayerNorm control): it is exempt from this check."""
    calls = [
        (page, words, call)
        for page in PAGES
        for block in code_blocks(page.read_text())
        if not PINNED_CHECKOUT.search(block)
        for words in commands(block)
        if (call := script_call(words)) is not None and not call[0].startswith("/")
    ]
    named = {call[0] for _, _, call in calls if (ROOT / call[0]).is_file()}
    run_scripts = {"ppo_atari.py", "a2c_atari.py", "a2c_lstm_atari.py"}  # what run.py's --scripts may name
    with ThreadPoolExecutor() as pool:  # each --help imports torch: seconds; two at a time on 2 cores
        list(pool.map(help_flags, sorted(named | run_scripts)))
    problems = []
    for page, words, call in calls:
        script, arguments = call
        where = f"{page.relative_to(ROOT)}: {' '.join(words)[:100]}"
        if not (ROOT / script).is_file():
            problems.append(f"{where}\n    names {script}, which does not exist")
            continue
        known = help_flags(script)
        problems += [f"{where}\n    {script} has no {flag}" for flag in flags_of(arguments) if flag not in known]
        if script == "benchmarks/run.py":
            problems += [f"{where}\n    {problem}" for problem in script_args_problems(script, arguments)]
    assert not problems, "commands that would not run:\n" + "\n".join(problems)


def table_rows(lines: list[str], start: int) -> tuple[list[str], list[list[str]]]:
    """The header and body cells of the Markdown table whose header is lines[start]."""

    def cells(line):
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header, rows = cells(lines[start]), []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return header, rows


def steps_of(budget: str) -> float:
    """'250k' -> 250,000; '1M' -> 1,000,000 (a 'steps' word after it is allowed)."""
    match = re.fullmatch(r"([\d.]+)\s*([kM])(?: steps)?", budget)
    assert match, f"budget {budget!r} is not like 250k or 10M"
    return float(match.group(1)) * {"k": 1e3, "M": 1e6}[match.group(2)]


def report_published(report_md: Path, game: str, label: str) -> str | None:
    """The 'published at this budget' cell of report.md's row for this script label, under ## game."""
    lines, section = report_md.read_text().splitlines(), None
    for i, line in enumerate(lines):
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == game and line.startswith("|") and "published at this budget" in line:
            header, rows = table_rows(lines, i)
            for row in rows:
                if row[header.index("script")] == label:
                    return row[header.index("published at this budget")]
    return None


def test_every_number_of_the_readme_results_table_is_its_report():
    """Each row of the README's results table links to a folder under benchmarks/results/; the
    report.json there holds an entry '<script label>/<game>' (the row's script, with its flags if
    the report has several entries for it) whose seeds, final mean, std over seeds and each seed's
    final, rounded to one decimal, are the row's; whose last step is the row's budget (within 1%:
    a run stops on a whole iteration); and the row's published figure is report.md's for that entry.
    A row with one seed may leave out its std (0.0) and its per-seed list."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("|") and "published at this budget" in line and "report" in line
        ),
        None,
    )
    assert start is not None, "README.md has no results table"
    header, rows = table_rows(lines, start)
    column = {
        name: next(i for i, cell in enumerate(header) if cell.startswith(name))
        for name in ("script", "game", "budget", "seeds", "final return", "published", "report")
    }
    assert rows, "the README's results table has no rows"
    problems = []
    for row in rows:
        cell = {name: row[i] for name, i in column.items()}
        where = f"README row {cell['script']} {cell['game']} {cell['budget']}"
        link = re.search(r"\]\(([^)]+)\)", cell["report"])
        if not link:
            problems.append(f"{where}: no link to its report")
            continue
        folder = ROOT / link.group(1)
        folder = folder if folder.is_dir() else folder.parent
        if not (folder / "report.json").is_file():
            problems.append(f"{where}: {folder.relative_to(ROOT)} holds no report.json")
            continue
        report = json.loads((folder / "report.json").read_text())
        label = re.sub(r"\.py\b", "", cell["script"].replace("`", "")).strip()
        entries = {
            key: value
            for key, value in report.items()
            if isinstance(value, dict)
            and "finals" in value
            and "/" in key
            and key.rsplit("/", 1)[1] == cell["game"]
            and key.split()[0].split("/")[0] == label.split()[0]
        }
        if f"{label}/{cell['game']}" in entries:
            key = f"{label}/{cell['game']}"
        elif len(entries) == 1:
            (key,) = entries
        else:
            problems.append(f"{where}: report.json has {len(entries)} entries for it: {sorted(entries)}")
            continue
        entry = entries[key]
        budget = steps_of(cell["budget"])
        if abs(entry["steps"] - budget) > 0.01 * budget:
            problems.append(f"{where}: the report's run ends at {entry['steps']} steps")
        seeds = [int(seed) for seed in re.findall(r"\d+", cell["seeds"])]
        if seeds != entry["seeds"]:
            problems.append(f"{where}: seeds {seeds}, the report's {entry['seeds']}")
        final = re.fullmatch(r"(-?[\d.]+)(?: \+- ([\d.]+))?(?: \(([^)]*)\))?", cell["final return"])
        if not final:
            problems.append(f"{where}: final return {cell['final return']!r} is not 'mean +- std (each seed)'")
            continue
        mean, std, each = final.groups()
        if mean != f"{entry['mean']:.1f}":
            problems.append(f"{where}: final {mean}, the report's {entry['mean']:.1f}")
        if std is None and len(entry["seeds"]) > 1 or std is not None and std != f"{entry['std']:.1f}":
            problems.append(f"{where}: std {std}, the report's {entry['std']:.1f}")
        per_seed = ", ".join(f"{value:.1f}" for value in entry["finals"])
        if each is None and len(entry["seeds"]) > 1 or each is not None and each != per_seed:
            problems.append(f"{where}: per seed ({each}), the report's ({per_seed})")
        published = (
            report_published(folder / "report.md", cell["game"], key.rsplit("/", 1)[0])
            if (folder / "report.md").is_file()
            else None
        )
        if published != cell["published"]:
            problems.append(f"{where}: published {cell['published']!r}, report.md's {published!r}")
    assert not problems, "the README's results table differs from its reports:\n" + "\n".join(problems)
