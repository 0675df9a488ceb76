"""Statistics, the tables on the terminal (rich) and docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

# --- statistics -----------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def secs(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f} s"


def spread(values: list[float], digits: int = 2) -> str:
    """min–max, and the interquartile range from 4 samples on."""
    if not values:
        return "—"
    text = f"{min(values):.{digits}f}–{max(values):.{digits}f}"
    if len(values) >= 4:
        text += f" (IQR {quantile(values, 0.25):.{digits}f}–{quantile(values, 0.75):.{digits}f})"
    return text


def ratio(ours: float | None, other: float | None) -> float | None:
    return None if ours is None or not other else ours / other


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


# --- what a measurement returns -----------------------------------------------------------------------


@dataclass
class Target:
    """A goal the table makes visible (never asserted): ``value`` compared with ``limit``."""

    what: str
    value: float | None
    limit: float
    strict: bool = False  # "<" instead of "≤"
    unit: str = "×"  # "×" (a ratio), "s" (seconds) or "" (a count or rate)

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value < self.limit if self.strict else self.value <= self.limit

    def row(self) -> list[str]:
        sign = "<" if self.strict else "≤"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        if self.unit == "×":
            value, goal = times(self.value), f"{sign} {self.limit:g}×"
        else:
            suffix = f" {self.unit}" if self.unit else ""
            value = "—" if self.value is None else f"{self.value:.{1 if self.unit == 's' else 2}f}".removesuffix(".00") + suffix
            goal = f"{sign} {self.limit:g}{suffix}"
        return [self.what, value, goal, verdict]


@dataclass
class Section:
    """One measurement's result: a table, what it means, and targets."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    how: str = ""  # one paragraph: what exactly was timed
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    extra: list[Section] = field(default_factory=list)  # sub-tables (e.g. a profile)


# --- the machine ---------------------------------------------------------------------------------------


def _run(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(root: Path) -> list[tuple[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    commit = _run("git", "-C", str(root), "rev-parse", "--short=12", "HEAD")
    dirty = _run("git", "-C", str(root), "status", "--porcelain", "--untracked-files=no")
    running = _run("docker", "ps", "--format", "{{.Names}}").split()
    others = ", ".join(sorted(running)) if len(running) <= 6 else f"{len(running)} ({', '.join(sorted(running)[:5])}, …)"
    versions = _run("docker", "run", "--rm", "--entrypoint", "python3", "deployer/jupyterhub:0.2.0", "-c",
                    "import jupyterhub, dockerspawner; print(jupyterhub.__version__, dockerspawner.__version__)").split()
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("git commit", commit + (" (with uncommitted changes)" if dirty else "")),
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("RAM", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("docker", _run("docker", "version", "--format", "{{.Server.Version}}")),
        ("OS", _run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME")),
        ("JupyterHub / dockerspawner (hub image)", " / ".join(versions) if len(versions) == 2 else "?"),
        ("load average at start (1, 5, 15 min)", load_average()),
        ("other containers running at start", others or "none"),
    ]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- output ----------------------------------------------------------------------------------------


def print_section(console: Console, section: Section) -> None:
    table = Table(title=section.title, title_justify="left", title_style="bold")
    for i, column in enumerate(section.columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in section.rows:
        table.add_row(*row)
    console.print(table)
    for note in section.notes:
        console.print(f"  [dim]• {note}[/dim]")
    for sub in section.extra:
        print_section(console, sub)


def target_section(sections: list[Section]) -> Section:
    found = [t for s in sections for t in s.targets]
    return Section("Targets (shown, not asserted)", ["target", "value", "goal", ""], [t.row() for t in found],
                   notes=["Where a target is missed, the profile tables under 1 and 2 (and 7's steps, 8's tables) show where the time goes."] if found else [])


def _md_table(columns: list[str], rows: list[list[str]], numeric: bool = True) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    align = "---:" if numeric else "---"
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join(["---"] + [align] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _md_section(section: Section, level: str = "###") -> list[str]:
    lines = [f"{level} {section.title}", ""]
    if section.how:
        lines += [section.how, ""]
    if section.rows:
        lines += _md_table(section.columns, section.rows) + [""]
    lines += [f"- {note}" for note in section.notes]
    if section.notes:
        lines.append("")
    for sub in section.extra:
        lines += _md_section(sub, level + "#")
    return lines


def markdown(intro: str, facts: list[tuple[str, str]], sections: list[Section], command: str, took: float) -> str:
    lines = [intro.strip(), "", "## Results", "",
             f"Generated by `{command}` in {took / 60:.1f} minutes. Every row of a table was measured in the same run on this machine:", ""]
    lines += _md_table(["machine", ""], [[k, v] for k, v in facts], numeric=False) + [""]
    targets = target_section(sections)
    if targets.rows:
        lines += _md_section(targets)
    for section in sections:
        lines += _md_section(section)
    return "\n".join(lines).rstrip() + "\n"
