"""The fault tier: kill, damage, race and fuzz every entry point (marker ``faults``, part of the default run).

Tests record their outcomes in two tables, printed at the end of the pytest output:

- kills: operation x fault point -> tried / recovered (previous state intact, verify passes) / identical after rerun;
- damage: damaged file or manifest key x kind -> detected on open / detected by verify / harmless (answers
  unchanged) / silently wrong (must stay 0). For model folders, loading is the only check: both columns show it.

New operations (``index update``, the server's reload) plug in by adding rows: a kill test per checkpoint in
``test_kill.py`` and, for new files on disk, their cases in ``test_damage.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from searchkit.faults import ENV

REPO = Path(__file__).resolve().parents[2]

# The libFuzzer harness is a script that test_fuzz.py::test_atheris_readers runs in a child process (slow tier). It
# imports atheris, which only the `fuzz` extra installs (a compiled libFuzzer build, kept out of `make test`), so
# collection (--doctest-modules) must not import it.
collect_ignore = ["atheris_readers.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


@dataclass
class KillRow:
    operation: str
    point: str
    tried: int = 0
    recovered: int = 0
    identical: int = 0


@dataclass
class DamageRow:
    target: str
    cases: int = 0
    on_open: int = 0
    by_verify: int = 0
    harmless: int = 0
    silently_wrong: int = 0


@dataclass
class FaultTables:
    kills: dict[tuple[str, str], KillRow] = field(default_factory=dict)
    damage: dict[str, DamageRow] = field(default_factory=dict)

    def kill(self, operation: str, point: str) -> KillRow:
        return self.kills.setdefault((operation, point), KillRow(operation, point))

    def damaged(self, target: str) -> DamageRow:
        return self.damage.setdefault(target, DamageRow(target))

    def format(self) -> list[str]:
        lines: list[str] = []
        if self.kills:
            lines.append(f"{'operation':<28} {'fault point':<26} {'tried':>5} {'recovered':>9} {'identical':>9}")
            for row in self.kills.values():
                lines.append(
                    f"{row.operation:<28} {row.point:<26} {row.tried:>5} {row.recovered:>9} {row.identical:>9}"
                )
        if self.damage:
            lines.append("")
            lines.append(
                f"{'damaged':<34} {'cases':>5} {'on open':>7} {'by verify':>9} {'harmless':>8} {'silently wrong':>14}"
            )
            for row in self.damage.values():
                lines.append(
                    f"{row.target:<34} {row.cases:>5} {row.on_open:>7} {row.by_verify:>9} {row.harmless:>8} "
                    f"{row.silently_wrong:>14}"
                )
            total = DamageRow("total")
            for row in self.damage.values():
                for name in ("cases", "on_open", "by_verify", "harmless", "silently_wrong"):
                    setattr(total, name, getattr(total, name) + getattr(row, name))
            lines.append(
                f"{'total':<34} {total.cases:>5} {total.on_open:>7} {total.by_verify:>9} {total.harmless:>8} "
                f"{total.silently_wrong:>14}"
            )
        return lines


_TABLES = pytest.StashKey[FaultTables]()


@pytest.fixture(scope="session")
def fault_tables(request: pytest.FixtureRequest) -> FaultTables:
    """The session's kill and damage tables (printed in the terminal summary)."""
    return request.config.stash.setdefault(_TABLES, FaultTables())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tables = config.stash.get(_TABLES, None)
    if tables is None or not (tables.kills or tables.damage):
        return
    terminalreporter.section("fault tier")
    for line in tables.format():
        terminalreporter.write_line(line)


CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def cli() -> CLI:
    """Run ``python -m searchkit ARGS`` in a subprocess; ``fault=NAME[:N]`` kills it at that checkpoint."""

    def run(*args: str | Path, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop(ENV, None)
        if fault is not None:
            env[ENV] = fault
        return subprocess.run(
            [sys.executable, "-m", "searchkit", *map(str, args)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
