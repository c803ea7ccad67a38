"""CHANGELOG.md's row-schema history names every field each schema version added, and the current one."""
from __future__ import annotations

import re
from pathlib import Path

from quantbench.harness.results import store

CHANGELOG = (Path(__file__).resolve().parents[2] / "CHANGELOG.md").read_text()


def _section(version: int) -> str:
    match = re.search(rf"^### Row schema {version}\b(.*?)(?=^### |\Z)", CHANGELOG, re.M | re.S)
    assert match, f"CHANGELOG.md has no 'Row schema {version}' section"
    return match.group(1)


def test_every_schema_version_has_a_section():
    for version in store.READABLE_VERSIONS:
        _section(version)
    assert max(store.READABLE_VERSIONS) == store.SCHEMA_VERSION


def test_each_added_field_is_listed_under_its_version():
    for version, fields in store.ADDED_FIELDS.items():
        text = _section(version)
        missing = [f for f in fields if f"`{f}`" not in text]
        assert missing == [], f"schema {version} fields missing from CHANGELOG.md: {missing}"
