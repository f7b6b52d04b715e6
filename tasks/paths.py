"""Where everything is written: one root folder, ``$HCP_HOME`` (default: the project folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.settings import PROJECT_ROOT


@dataclass(frozen=True)
class Paths:
    """The output layout under one root; folders are created on demand by the writers."""

    home: Path

    @classmethod
    def from_env(cls) -> Paths:
        """Root from ``$HCP_HOME``, else the project folder."""
        return cls(Path(os.environ.get("HCP_HOME") or PROJECT_ROOT).resolve())

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def store(self) -> Path:
        return self.data / "store"

    @property
    def demo(self) -> Path:
        return self.data / "demo"

    @property
    def features(self) -> Path:
        return self.data / "features"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def val(self) -> Path:
        return self.home / "val"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def quality(self) -> Path:
        return self.reports / "quality"

    @property
    def runs(self) -> Path:
        return self.reports / "runs"

    @property
    def prefect_home(self) -> Path:
        return self.home / ".prefect"


@dataclass(frozen=True)
class SandboxPaths(Paths):
    """A replay's own root: it reads the bar store and the models of ``home`` and writes every
    other output (plans, reports, features, run records, trading state) under ``root``, so a
    replay never touches the live ``data/state`` of ``home``."""

    root: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def store(self) -> Path:
        return self.home / "data" / "store"

    @property
    def demo(self) -> Path:
        return self.home / "data" / "demo"

    @property
    def val(self) -> Path:
        return self.root / "val"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def resolve_user_path(path: Path, home: Path) -> Path:
    """A path given on the command line: an absolute one as is; a relative one against
    ``home`` (``$HCP_HOME``), else against the current folder where only that one exists
    (so ``--replay reports/replay/<S>_<E>`` works from any folder)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    under_home = home / path
    if not under_home.exists() and path.exists():
        return path.resolve()
    return under_home


def state_dir(paths: Paths) -> Path:
    """``data/state`` of a home: the book, the kill switch, the logs and the other state files."""
    return paths.data / "state"
