"""Fixtures of the experiments tests: studies whose training and evaluation are faked."""

from __future__ import annotations

import pytest
from fake_study import install_fakes


@pytest.fixture
def fake(monkeypatch):
    """Fake train + evaluate_run (placeholder weights); returns the list of (variant, seed) trained."""
    return install_fakes(monkeypatch)


@pytest.fixture
def fake_weights(monkeypatch):
    """As ``fake``, but each run holds real (untrained) weights of its variant and a results.csv."""
    return install_fakes(monkeypatch, real_weights=True)
