"""Unit tests of the core run against a fresh plugin manager without entry points.

Every test under tests/core/ gets its own default manager (the built-ins only: no
e3nn, export or inductor plugin from the installed entry points), as pytest's own
unit tests get a fresh ``pytester`` config: a plugin registered on the default
manager by one test is gone for the next, and what the core does cannot depend on
which third-party plugins happen to be installed.  A test that needs such a plugin
asks for it with ``plugins=[...]`` (or lives in tests/plugins/).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_plugin_manager(default_plugin_manager):
    """tests/conftest.py's ``default_plugin_manager``, for every test of the core."""
    return default_plugin_manager
