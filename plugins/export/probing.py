"""Which submodules export, and why the others do not.

Like ``torch._export.tools.report_exportability`` and ``thunder.examine``: run the model
eagerly once, recording every submodule's inputs, then ``torch.export.export`` each
submodule on its own inputs.  :func:`probe` tries every module of the tree and returns a
table; :func:`deepest_failure` descends from a module that failed into its failing
children and names the deepest one, the module whose own code is the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import torch

from torchstitch import TracingInputsError
from torchstitch.plugins.toolkit import TracingInputs, as_example_sets, display_path, record_inputs

from .diagnosis import Diagnosis, diagnose

__all__ = ["Finding", "ProbeReport", "ProbeRow", "deepest_failure", "probe"]

log = logging.getLogger(__name__)


@attrs.frozen
class Finding:
    """The deepest submodule whose own export fails."""

    #: dotted path from the model's root
    path: str
    #: the module's class, ``module.QualName``
    type_name: str
    #: why its export fails
    diagnosis: Diagnosis


@attrs.frozen
class ProbeRow:
    """One module of a :class:`ProbeReport`."""

    #: dotted path from the model's root (``""``: the root)
    path: str
    #: the module's class, ``module.QualName``
    type_name: str
    #: whether it exports on its recorded inputs; ``None``: the run never called it
    exports: bool | None
    #: why it does not export (``None`` when it does, or was not called)
    diagnosis: Diagnosis | None = None
    #: whether it is a TorchScript module (its descendants are part of it)
    torchscript: bool = False


@attrs.frozen
class ProbeReport:
    """Every module of a model: whether ``torch.export.export`` takes it on its recorded inputs."""

    #: one row per module, a parent before its children, in the model's order
    rows: tuple[ProbeRow, ...]

    def failures(self) -> list[ProbeRow]:
        """The rows of modules that do not export."""
        return [row for row in self.rows if row.exports is False]

    def deepest_failures(self) -> list[ProbeRow]:
        """Failing modules none of whose descendants fails: where the cause is.

        The modules inside a TorchScript module are part of it: the top-most TorchScript
        module is the cause, not its scripted children.
        """
        scripted = [row.path for row in self.rows if row.torchscript]
        failing = [row for row in self.failures() if not any(_below(row.path, outer) for outer in scripted)]
        return [row for row in failing if not any(_below(other.path, row.path) for other in failing)]

    def render(self) -> str:
        """A text table (path | type | exports | reason | where), then torch's first line
        and the cure for each of the deepest failures."""
        header = ("path", "type", "exports", "reason", "where")
        table = [header, *(_cells(row) for row in self.rows)]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [_joined(line, widths) for line in table]
        lines.insert(1, _joined(tuple("-" * width for width in widths), widths))
        for row in self.deepest_failures():
            assert row.diagnosis is not None  # a failing row has its diagnosis
            lines.append("")
            lines.append(f"{display_path(row.path)}: {row.diagnosis.error_type}: {row.diagnosis.first_line}")
            if row.diagnosis.source is not None:
                lines.append(f"  at {row.diagnosis.source}")
            lines.append(f"  hint: {row.diagnosis.hint}")
        return "\n".join(lines)


def probe(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    export_options: Mapping[str, Any] | None = None,
) -> ProbeReport:
    """Export every module of ``model`` on the inputs it sees when ``model`` runs on ``example_inputs``.

    Nothing of ``model`` changes: the recording run restores its buffers, and export
    traces with fake tensors.  A module the run never calls is reported with
    ``exports=None``.

    :param model: the model (not changed).
    :param example_inputs: the root's positional arguments (a tuple, or one tensor), or a
        list of input sets as :func:`torchstitch.compile` takes (the first is probed: the
        probe asks whether each module exports, with the sizes it sees).
    :param export_options: keyword arguments of ``torch.export.export`` (default: non-strict).
    :raises TracingInputsError: if the eager run fails.
    """
    sets = as_example_sets(example_inputs)
    if sets is None:
        raise TypeError("probe needs example_inputs: the root's positional arguments")
    recorded = record_inputs(model, [{"forward": sets[0]}])
    rows = []
    for path, module in model.named_modules():
        scripted = isinstance(module, torch.jit.ScriptModule)
        args = _export_args(module, recorded.get(path))
        if args is None:
            rows.append(ProbeRow(path, _type_name(module), None, torchscript=scripted))
            continue
        diagnosis = try_export(module, args, export_options)
        rows.append(ProbeRow(path, _type_name(module), diagnosis is None, diagnosis, torchscript=scripted))
    return ProbeReport(tuple(rows))


def deepest_failure(
    module: torch.nn.Module,
    calls: TracingInputs,
    path: str = "",
    *,
    export_options: Mapping[str, Any] | None = None,
) -> Finding | None:
    """The deepest submodule of ``module`` whose own export fails on its recorded inputs.

    From ``module``, the first child (in order) whose export fails is taken, then its
    first failing child, and so on, as ``report_exportability`` does; a TorchScript
    module ends the search (its children are part of it).  Only the modules on the
    way are exported.

    :param module: a module whose export failed on ``calls`` (not changed).
    :param calls: its calls, ``[{"forward": args}, ...]``; the eager run records on each.
    :param path: the path of ``module`` in the model, prefixed to the finding's path.
    :param export_options: keyword arguments of ``torch.export.export`` (default: non-strict).
    :returns: the finding, or ``None`` when every child exports on its own (the failure
        is in ``module``'s own code) or ``module`` has no children.
    :raises TracingInputsError: if the eager run fails (naming the module's path in the model).
    """
    try:
        recorded = record_inputs(module, calls)
    except TracingInputsError as exc:  # its path is relative to ``module``: say it in the model's
        raise TracingInputsError(exc.message, path=_joined_path(path, exc.path or "")) from exc
    finding = None
    current, current_path = module, ""
    # the modules inside a TorchScript module are part of it: the search ends there
    while not isinstance(current, torch.jit.ScriptModule):
        failing = _first_failing_child(current, current_path, recorded, export_options)
        if failing is None:
            return finding
        current_path, current, diagnosis = failing
        finding = Finding(_joined_path(path, current_path), _type_name(current), diagnosis)
        log.debug("%s: its own export fails (%s)", display_path(finding.path), diagnosis.code)
    return finding


def try_export(
    module: torch.nn.Module, args: tuple[Any, ...], export_options: Mapping[str, Any] | None = None
) -> Diagnosis | None:
    """Why ``torch.export.export(module, args)`` fails, or ``None`` when it succeeds.

    What torch prints on a failure (a partial graph to stderr, warnings about the
    symbols it could not trace back to user code) goes to the debug log: a probe tries
    many modules, and the table says what failed.
    """
    options = {"strict": False, **(export_options or {})}
    try:
        with quiet_failures(f"export of {type(module).__name__}"):
            torch.export.export(module, args, **options)
    except Exception as exc:
        return diagnose(exc)
    return None


@contextlib.contextmanager
def quiet_failures(what: str) -> Iterator[None]:
    """Keep what torch prints while ``what`` fails (a partial graph on stderr, thousands of
    lines sometimes; warnings about symbols it cannot trace to user code) out of the
    terminal: it goes to the debug log.  On success, what was printed goes to stderr."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), _torch_warnings_to_debug():
            yield
    except BaseException as exc:
        log.debug("%s failed: %s\ntorch printed:\n%s", what, exc, captured.getvalue())
        raise
    sys.stderr.write(captured.getvalue())


#: the torch logger that warns on every data-dependent failure ("Unable to find user code ...")
_SHAPES_LOGGER = "torch.fx.experimental.symbolic_shapes"


@contextlib.contextmanager
def _torch_warnings_to_debug() -> Iterator[None]:
    """Route the records of torch's symbolic-shapes logger to this module's debug log."""

    def to_debug(record: logging.LogRecord) -> bool:
        log.debug("torch: %s", record.getMessage())
        return False

    logger = logging.getLogger(_SHAPES_LOGGER)
    logger.addFilter(to_debug)
    try:
        yield
    finally:
        logger.removeFilter(to_debug)


def _first_failing_child(
    module: torch.nn.Module,
    path: str,
    recorded: Mapping[str, TracingInputs],
    export_options: Mapping[str, Any] | None,
) -> tuple[str, torch.nn.Module, Diagnosis] | None:
    for child_path, child in _children(module, path):
        args = _export_args(child, recorded.get(child_path))
        if args is None:
            continue  # never called (or recorded under another path): nothing to export it on
        diagnosis = try_export(child, args, export_options)
        if diagnosis is not None:
            return child_path, child, diagnosis
    return None


def _export_args(module: torch.nn.Module, calls: TracingInputs | None) -> tuple[Any, ...] | None:
    """The arguments to export ``module`` on: its first recorded call; ``None``: nothing to export on."""
    if calls:
        return tuple(calls[0]["forward"])
    if isinstance(module, torch.jit.ScriptModule):
        # no hooks record a TorchScript module's inputs, and none are needed: torch.export
        # refuses a ScriptModule before it reads the arguments
        return ()
    return None


def _children(module: torch.nn.Module, path: str) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, child in module.named_children():
        yield _joined_path(path, name), child


def _joined_path(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else prefix or path


def _below(path: str, ancestor: str) -> bool:
    """Whether ``path`` is a strict descendant of ``ancestor``."""
    return path != ancestor and (ancestor == "" or path.startswith(ancestor + "."))


def _type_name(module: torch.nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _cells(row: ProbeRow) -> tuple[str, ...]:
    exports = {True: "yes", False: "no", None: "not run"}[row.exports]
    diagnosis = row.diagnosis
    reason = diagnosis.code if diagnosis is not None else ""
    where = diagnosis.source.short() if diagnosis is not None and diagnosis.source is not None else ""
    return (display_path(row.path), row.type_name.rpartition(".")[2], exports, reason, where)


def _joined(cells: tuple[str, ...], widths: list[int]) -> str:
    return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
