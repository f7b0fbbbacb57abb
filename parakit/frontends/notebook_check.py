"""``parakit preflight NOTEBOOK... --machine 8xh100``: a notebook's dry run on a machine it is
not running on. It checks that every setting the notebook asks for is accepted there; it is
not a GPU test, and it measures nothing.

How: the notebook's code cells run in order in an IPython shell of their own, in a temporary
folder, with the preflight seeing a faked machine (session/dry_machines.py), ``%parakit`` served by
the real magics behind a ``DrySession`` (dry_magics.py, dry_session.py) and ``parakit.Session``
replaced by that ``DrySession`` too. Every ``%parakit`` line and Session call is checked by the
functions the real ones call, and a run returns a stub result, so a loop of runs is checked to
its end.

What it covers: every request a cell reaches, with the values the notebook computed for this
machine (``ON_GPU``, ``SCALE`` and ``SHARED_GPU`` from the faked ``%parakit status`` or
``session.gpus``). What it does not: code that reads a measurement (a summary, an assert, a
figure) fails on the stubs, which ends that cell early; the cells after it still run. A request
that only such code would reach, and whatever a notebook decides from measured numbers, is not
checked. Nothing is trained, and the engines' own checks (an fp8 kernel, a GPU's memory) are not
made.

A refusal the notebook expects is not a failure: one it catches itself (``try: ... except``),
or one that ends a cell tagged ``raises-exception`` (the tag nbval and nbconvert also honour).
Any other refusal fails the check: exit code 2.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import os
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from parakit.frontends import options
from parakit.session.dry_machines import MACHINES, Machine, faked, machine_named

if TYPE_CHECKING:  # imported where a dry run starts: they import IPython, which the rest of the CLI does not need
    from parakit.frontends.dry_session import Check, CheckLog

EXPECTS_REFUSAL = "raises-exception"
"""The cell tag for a cell that shows a refusal on purpose."""


@dataclass
class NotebookCheck:
    """One notebook's dry run on one machine."""

    notebook: str
    machine: Machine
    checks: list[Check] = field(default_factory=list)
    """Every request, in order, with the preflight's answer."""
    unexpected: list[Check] = field(default_factory=list)
    """Refusals that ended a cell not tagged for one: what fails the check."""
    ended_early: dict[int, str] = field(default_factory=dict)
    """Cell -> why it ended before its last line (a refusal, a stop before a measurement, or
    code that read a stub's measurement)."""

    @property
    def ok(self) -> bool:
        return not self.unexpected

    @property
    def expected(self) -> list[Check]:
        """Refusals the notebook caught, or that ended a cell tagged for one."""
        return [c for c in self.checks if c.refusal is not None and c not in self.unexpected]

    def lines(self, verbose: bool = False) -> list[str]:
        """The check as text: a headline, a line per refusal, and which cells ended early."""
        out = [f"{self.notebook} on {self.machine.name} ({self.machine.describe()}): {len(self.checks)} request(s), "
               f"{len(self.unexpected)} refused unexpectedly, {len(self.expected)} refused as the notebook expects"]
        for check in self.checks:
            if check.refusal is not None:
                how = "REFUSED" if check in self.unexpected else "refused, as expected"
                out.append(f"  cell {check.cell} {how}: {check.request}: {check.refusal}")
            elif verbose:
                out.append(f"  cell {check.cell} {'checked, then stopped' if check.stopped else 'ok'}: {check.request}")
        unchecked = sorted(cell for cell, why in self.ended_early.items() if not why.startswith("refused"))
        if verbose:
            out += [f"  cell {cell} ended early: {self.ended_early[cell]}" for cell in unchecked]
        elif unchecked:
            out.append(f"  ended early, where a measurement is read or would be made (-v says where): cells "
                       f"{', '.join(map(str, unchecked))}")
        return out


def dry_run(path: str | os.PathLike, machine: Machine) -> NotebookCheck:
    """Run a notebook's code cells against ``machine`` with nothing started (see the module's doc).

    Args:
        path: the .ipynb file.
        machine: what the preflight sees (``dry_machines.MACHINES``).

    Returns:
        The NotebookCheck: every request and answer, the unexpected refusals, the cells ended early.
    """
    import nbformat

    from parakit.frontends.dry_session import CheckLog

    path = Path(path).resolve()
    notebook = nbformat.read(path, as_version=4)
    log = CheckLog()
    found = NotebookCheck(path.name, machine, log.checks)
    with faked(machine), _dry_shell(log, machine) as shell:
        for number, cell in enumerate(notebook.cells, start=1):
            if cell.cell_type != "code":
                continue
            log.cell = number
            ran = shell.run_cell(cell.source, store_history=False, silent=True)
            error = ran.error_before_exec or ran.error_in_exec
            if error is not None:
                tagged = EXPECTS_REFUSAL in cell.metadata.get("tags", [])
                found.ended_early[number] = _why_ended(error, log.checks, found.unexpected, tagged)
    return found


def _why_ended(error: BaseException, checks: list[Check], unexpected: list[Check], tagged: bool) -> str:
    from parakit.frontends.dry_session import DryRunStop

    refused = next((c for c in checks if c.error is error), None)
    if refused is not None:
        if not tagged:
            unexpected.append(refused)
        return f"refused: {refused.refusal}"
    if isinstance(error, DryRunStop):
        return str(error)
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:120]} (reads what a dry run does not make)"


@contextlib.contextmanager
def _dry_shell(log: CheckLog, machine: Machine) -> Iterator:
    """An IPython shell of its own in a temporary folder, where ``%load_ext parakit`` loads the
    dry magics and ``parakit.Session`` is a DrySession; its output is swallowed, and everything
    it replaced is put back on the way out."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from parakit.advisor import advice
    from parakit.frontends import magics, magics_engines
    from parakit.frontends.dry_magics import DryMagics
    from parakit.frontends.dry_session import DrySession, stop
    from parakit.session import fit, session

    dry_session = type("Session", (DrySession,), {"log": log, "device_name": machine.gpu_name or "CPU"})
    stand_ins = [
        (session, "Session", dry_session),
        (magics_engines, "Session", dry_session),
        (magics, "load_ipython_extension", lambda ip: ip.register_magics(DryMagics(ip, log))),
        (fit, "_search", stop("a fit's search")),  # run_fit checks every layout first
        (advice, "_advise", stop("the advisor's calibration")),  # advise checks the request first
    ]
    config = Config()
    config.HistoryManager.enabled = False
    module = types.ModuleType("__parakit_dry_run__")  # not __main__, which IPython would replace
    with contextlib.ExitStack() as stack:
        for owner, name, stand_in in stand_ins:
            stack.enter_context(mock.patch.object(owner, name, stand_in))
        stack.enter_context(contextlib.chdir(stack.enter_context(tempfile.TemporaryDirectory(prefix="parakit-dry-"))))
        stack.enter_context(mock.patch.dict(os.environ, {"PARAKIT_STATIC_FIGURES": "0"}))  # no browser for SVGs
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.callback(sys.modules.pop, module.__name__, None)
        shell = InteractiveShell(config=config, user_module=module)
        # A cell's error is read from its result; formatting the traceback no one sees cost 0.3 s.
        shell.showtraceback = lambda *args, **kwargs: None
        # Its exit hook resets the namespace with a gc.collect, ~0.5 s a shell at interpreter exit;
        # it has no history or temporary file to save.
        stack.callback(atexit.unregister, shell.atexit_operations)
        yield shell


def add_preflight_parser(sub) -> None:
    """``parakit preflight``'s options, on the ``parakit`` command's subparsers."""
    machines = "; ".join(f"{m.name}: {m.describe()}" for m in MACHINES.values())
    p = sub.add_parser("preflight", help="check that notebooks' settings are accepted on other machines (GPUs, "
                                         "faked): a dry run through the preflight, nothing started")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="the .ipynb files to check")
    p.add_argument("--machine", type=options.comma_list(str), default=None, metavar="NAME,...",
                   help=f"the machines to check on (default: every one): {machines}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="a line per request, and why each cell that ended early did")


def preflight_command(args: argparse.Namespace) -> int:
    """Each notebook on each machine; exit code 2 when a refusal was not expected."""
    with options.checked_input():
        machines = [machine_named(name) for name in args.machine or MACHINES]
        paths = [Path(p) for p in args.notebooks]
        for path in paths:
            if path.suffix != ".ipynb" or not path.is_file():
                raise ValueError(f"{path} is not a notebook file (.ipynb)")
    refused = 0
    for path in paths:
        for machine in machines:
            found = dry_run(path, machine)
            refused += len(found.unexpected)
            print("\n".join(found.lines(args.verbose)), flush=True)
    runs = len(paths) * len(machines)
    print(f"preflight: {runs} dry run(s), {refused} unexpected refusal(s)")
    return 2 if refused else 0
