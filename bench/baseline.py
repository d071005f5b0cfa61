"""threadchat of another git revision, run beside the working tree (``--baseline REV``).

The revision is checked out once as a detached git worktree in ``bench/baselines/<commit>``
(gitignored) and reused by later runs; nothing else in the repository or its other worktrees
is touched. Its servers, ``threadchat-irc@REV`` and ``threadchat-json@REV``, start with the
same Python and the same ``threadchat_command`` as the working tree's, from that checkout
(cwd and first on PYTHONPATH), so they import that revision's package, not the installed
one. ``prepare_baseline`` checks both: where the package is imported from, and that the
revision's ``serve`` knows every flag ``threadchat_command`` passes.

Remove a baseline with ``git worktree remove bench/baselines/<commit>``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from bench.servers import (
    BENCH_DIR,
    REPO_DIR,
    SERVERS,
    ServerSpec,
    threadchat_command,
    threadchat_env,
    threadchat_module_file,
)

BASELINES_DIR = BENCH_DIR / "baselines"
# The servers a baseline can stand beside: threadchat only, the others have no revisions.
COMPARABLE = ("threadchat-irc", "threadchat-json")
GIT_TIMEOUT_S = 120.0


class BaselineError(RuntimeError):
    """The baseline revision cannot be prepared or would not run the code it names."""


@dataclass(frozen=True)
class Baseline:
    rev: str  # as asked for, e.g. "f195cf1" or "HEAD"
    commit: str  # full hash
    label: str  # short hash: the suffix of its server names
    path: Path  # the worktree


def git(*args: str, cwd: Path = REPO_DIR) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
    except OSError as exc:
        raise BaselineError(f"cannot run git: {exc}") from exc
    if out.returncode != 0:
        raise BaselineError(f"git {' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out.stdout.strip()


def resolve(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except BaselineError:
        shallow = git("rev-parse", "--is-shallow-repository") == "true"
        hint = " (the clone is shallow: `git fetch --unshallow` first)" if shallow else ""
        raise BaselineError(f"unknown revision {rev!r}{hint}") from None


def prepare_baseline(rev: str, root: Path = BASELINES_DIR) -> Baseline:
    """The worktree of rev under root, added if absent, checked if present; then verified."""
    commit = resolve(rev)
    label = git("rev-parse", "--short", commit)
    path = (root / commit[:12]).resolve()
    if path.exists():
        # A folder that is no worktree of its own would answer for the enclosing repository.
        if Path(git("rev-parse", "--show-toplevel", cwd=path)).resolve() != path:
            raise BaselineError(f"{path} exists but is no git worktree: remove it")
        if git("rev-parse", "HEAD", cwd=path) != commit:
            raise BaselineError(f"{path} is not at {commit}: `git worktree remove` it")
    else:
        root.mkdir(parents=True, exist_ok=True)
        # --force: only to reuse the name of a worktree of ours whose folder was deleted.
        git("worktree", "add", "--detach", "--force", str(path), commit)
    if git("status", "--porcelain", "--", "threadchat", cwd=path):
        raise BaselineError(f"{path} has local changes in threadchat/: it would not be {label}")
    baseline = Baseline(rev, commit, label, path)
    verify_source(path)
    verify_flags(path)
    return baseline


def verify_source(source_dir: Path) -> Path:
    """Fail unless a server started from source_dir imports the threadchat in source_dir."""
    module = threadchat_module_file(source_dir)
    if not module.is_relative_to(source_dir.resolve()):
        raise BaselineError(f"a server started in {source_dir} would import {module}")
    return module


def verify_flags(source_dir: Path) -> None:
    """Fail unless that revision's ``serve`` accepts every flag threadchat_command passes."""
    out = subprocess.run(
        [sys.executable, "-m", "threadchat", "serve", "--help"],
        cwd=source_dir, env=threadchat_env(source_dir),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise BaselineError(f"`threadchat serve --help` failed in {source_dir}: {out.stderr}")
    # argparse accepts abbreviations, so the whole flag must appear in the help.
    known = set(re.findall(r"--[a-z][a-z0-9-]*", out.stdout))
    used = {
        arg
        for history in (True, False)
        for arg in threadchat_command(1, 2, history=history, data_dir="data")
        if arg.startswith("--")
    }
    missing = sorted(used - known)
    if missing:
        raise BaselineError(f"threadchat in {source_dir} lacks {', '.join(missing)}")


def baseline_servers(baseline: Baseline) -> dict[str, ServerSpec]:
    """``threadchat-irc@<label>`` and ``threadchat-json@<label>``, run from the worktree."""
    specs = {}
    for name in COMPARABLE:
        spec = SERVERS[name]
        specs[f"{name}@{baseline.label}"] = replace(
            spec,
            name=f"{name}@{baseline.label}",
            options={**spec.options, "source_dir": str(baseline.path), "revision": baseline.label},
            notes=f"{spec.notes}, at {baseline.label}",
        )
    return specs


def baseline_of(server: str) -> tuple[str, str | None]:
    """``threadchat-irc@f195cf1`` -> (``threadchat-irc``, ``f195cf1``); no @ -> (name, None)."""
    kind, _, label = server.partition("@")
    return kind, label or None


def working_tree_label() -> str:
    """The working tree's commit, and whether its threadchat/ differs from it."""
    commit = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "threadchat")
    return f"{commit} + uncommitted changes" if changed else commit
