"""Unit tests of the core run against a fresh plugin manager without entry points.

Every test under tests/core/ gets its own manager (the built-ins only: no e3nn,
export or inductor plugin from the installed entry points), as pytest's own
unit tests get a fresh ``pytester`` config: a plugin registered on the default
manager by one test is gone for the next, and what the core does cannot depend
on which third-party plugins happen to be installed.  A test that needs such a
plugin asks for it with ``plugins=[...]`` (or lives in tests/plugins/).
"""

from __future__ import annotations

import sys

import pluggy
import pytest

import torchstitch as ts

AUTOLOAD_ENV = "TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD"


@pytest.fixture(autouse=True)
def default_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    """The fresh manager ``ts.get_plugin_manager()`` returns for this test's duration.

    ``plugins=[...]`` calls build their private managers without entry points too.
    """
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    fresh = ts.make_plugin_manager(autoload=False)
    # The one private hook point: the lazily created default that get_plugin_manager()
    # returns (its module's ``_default_pm``), found through the public function so that
    # the fixture follows the function wherever it is defined.
    home = sys.modules[ts.get_plugin_manager.__module__]
    monkeypatch.setattr(home, "_default_pm", fresh)
    assert ts.get_plugin_manager() is fresh, "get_plugin_manager() no longer reads _default_pm"
    return fresh
