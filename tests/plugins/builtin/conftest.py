"""Tests of the built-in plugins run, like the core's, against a fresh plugin manager
without entry points (see tests/core/conftest.py): the built-ins alone, plus what a
test passes with ``plugins=[...]``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_plugin_manager(default_plugin_manager):
    """tests/conftest.py's ``default_plugin_manager``, for every test of the built-in plugins."""
    return default_plugin_manager
