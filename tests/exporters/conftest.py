"""Fixtures shared by the exporter tests on the shipped Fashion-MNIST CNN.

One artifact store for the whole session: the store keys artifacts by their inputs (FP32 hash, settings,
data, tool versions), so a variant that two test modules build (8-bit MinMax on 64 images, say) is
quantized once, and a test that needs a fresh store makes its own ``ArtifactStore(tmp_path)``.
"""
from __future__ import annotations

import pytest

from quantbench.exporters.artifacts import ArtifactStore
from quantbench.exporters.registry import resolve_model


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def source():
    return resolve_model("fashion_cnn")
