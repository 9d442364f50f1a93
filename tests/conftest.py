"""Fixtures shared by the engine tests: the tiny models as engines (one per test module, as module scope)."""

from __future__ import annotations

import pytest

from ltx_backend.pipeline.engine import Engine
from ltx_backend.tiny import write_tiny_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """LTX-2.0 in the unified layout."""
    return Engine(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="module")
def engine23(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """LTX-2.3 in the split layout, 4-bit transformer."""
    return Engine(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-2.3", "2.3"))


@pytest.fixture(params=["2.0 unified", "2.3 split q4"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("engine" if request.param.startswith("2.0") else "engine23")
