"""torch.export integration: the ``export`` strategy and the ``export`` / ``aoti`` artifact formats.

Registered through the ``torchstitch`` entry-point group (name ``export``).
``ts.compile(model, example_inputs=..., target="export")`` retargets ``script`` and
``trace`` claims, and claims their claimant declared ``portable`` (e3nn's), to ``export``;
see ``docs/deploying.md`` for the options and recipes.
"""

from __future__ import annotations

import logging

from torchstitch import ArtifactFormat, Strategy, hookimpl

from .diagnosis import REASONS, Diagnosis, SourceLine, diagnose
from .formats import AOTI_FORMAT, EXPORT_FORMAT, custom_ops, package_metadata
from .module import AOTIModule, ExportedModule
from .probing import Finding, ProbeReport, ProbeRow, deepest_failure, probe
from .strategy import STRATEGY, compile_export, dynamic_shapes_for

__all__ = [
    "AOTIModule",
    "AOTI_FORMAT",
    "Diagnosis",
    "EXPORT_FORMAT",
    "ExportedModule",
    "Finding",
    "ProbeReport",
    "ProbeRow",
    "REASONS",
    "STRATEGY",
    "SourceLine",
    "compile_export",
    "custom_ops",
    "deepest_failure",
    "diagnose",
    "dynamic_shapes_for",
    "package_metadata",
    "probe",
    "whole_model_rules",
]

log = logging.getLogger(__name__)


def whole_model_rules() -> list:
    """Rules that export the root as one graph and let every descendant inherit.

    ``ts.compile(model, example_inputs=..., target="export", rules=whole_model_rules())``:
    descendants' own claims (``script`` from e3nn, ``@compile_mode``) are overridden, so
    they are traced as part of the root; a data-dependent branch among them then fails
    the export with a NodeCompileError at the root.
    """
    from torchstitch import Rule

    return [Rule("export", path=""), Rule(None, path="**")]


@hookimpl
def torchstitch_strategies() -> list[Strategy]:
    return [STRATEGY]


@hookimpl
def torchstitch_artifact_formats() -> list[ArtifactFormat]:
    # "export" first: ts.save picks the first format that accepts the root
    return [EXPORT_FORMAT, AOTI_FORMAT]
