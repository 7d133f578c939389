"""Fixtures of the hostile-input suite: one case server per session (see ``hostile_harness``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_harness import CaseRunner


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaseRunner]:
    """Runs cases in processes forked from one server that has imported torch and yoloattn."""
    r = CaseRunner(tmp_path_factory.mktemp("hostile-cases"))
    yield r
    r.close()
