"""Fixtures shared by the exporter tests on the shipped Fashion-MNIST CNN (one store per test module)."""
from __future__ import annotations

import pytest
from quantbench.exporters.artifacts import ArtifactStore
from quantbench.exporters.registry import resolve_model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def source():
    return resolve_model("fashion_cnn")
