from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.serve.settings import bundled_repository
from tests.server import KilnProcess, kiln_serve


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    """``kiln serve`` on the bundled example repository, shared by the session."""
    with kiln_serve(bundled_repository(), log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path
