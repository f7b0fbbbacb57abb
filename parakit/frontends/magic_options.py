"""The ``%parakit`` subcommands' option groups, as ``magic_arguments`` decorators that add the
groups of options.py (the ones ``parakit`` uses), and the guard that turns a setting's
ValueError into one-line UsageError."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic_arguments import ArgDecorator

from parakit.frontends import advise_options as advise_group
from parakit.frontends import options


class run_options(ArgDecorator):
    """The settings of one run, exactly as ``parakit run`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_run_options(parser)


class switch_options(ArgDecorator):
    """Every setting a live switch may change (options.add_switch_options)."""

    def add_to_parser(self, parser, group):
        options.add_switch_options(parser)
        return None


class continue_options(ArgDecorator):
    """Switches while a run trains, its state saved, or resumed, as ``parakit run`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_continue_options(parser)


class price_options(ArgDecorator):
    """What runs are costed with, exactly as ``parakit run`` and ``parakit sweep`` take it."""

    def add_to_parser(self, parser, group):
        options.add_price_options(parser)


class engine_options(ArgDecorator):
    """Where engines run; used when they start (``start``, ``restart``, a first ``run``)."""

    def add_to_parser(self, parser, group):
        parser.add_argument("--gpus", type=options.comma_list(int), default=None, metavar="0,1",
                            help="GPU indices to pin engines to (default: every visible GPU)")
        parser.add_argument("--cpu", action="store_true", help="CPU engines, even with GPUs present")
        options.add_launch_options(parser)


class advise_options(ArgDecorator):
    """The advisor's settings, exactly as ``parakit advise`` takes them."""

    def add_to_parser(self, parser, group):
        advise_group.add_advise_options(parser)


class bench_options(ArgDecorator):
    """The settings of a communication benchmark, exactly as ``parakit bench comm`` takes them."""

    def add_to_parser(self, parser, group):
        options.add_bench_options(parser)


class sweep_options(ArgDecorator):
    """A sweep's settings, exactly as ``parakit sweep`` takes them (needs
    ``@kwds(conflict_handler="resolve")``: the comma lists replace the run options)."""

    def add_to_parser(self, parser, group):
        options.add_sweep_options(parser)


class fit_options(ArgDecorator):
    """A fit's settings, exactly as ``parakit fit`` takes them."""

    def add_to_parser(self, parser, group):
        from parakit.frontends.fit_cli import add_fit_options

        add_fit_options(parser)


class selection_options(ArgDecorator):
    """Which runs of the store: the last K, or named ones."""

    def add_to_parser(self, parser, group):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--last", type=int, default=None, metavar="K", help="the K latest runs")
        which.add_argument("--runs", type=options.comma_list(str), default=None, metavar="ID,...",
                           help="these runs (the end of an id is enough when it is unique)")


class _ChecksInput:
    """Turns a setting's ValueError into a UsageError; only around checks, so a ValueError
    from inside a run is reported as the bug it is."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> None:
        if isinstance(error, ValueError):
            raise UsageError(str(error)) from None


checked = _ChecksInput()

