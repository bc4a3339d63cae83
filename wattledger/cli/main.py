"""The command line: the ``wattledger`` group and its commands, one module each.

Every option that sets a config key has a WATTLEDGER_<SECTION>_<KEY>
environment twin, read by ``config.load`` (the one reader, one set of rules);
the options themselves are typed ``config.Overrides``. Logs go to stderr;
data (line protocol, reports, JSON) to stdout.
"""

from __future__ import annotations

import logging
import sys

import click

from wattledger import __version__
from wattledger.cli.agent import agent
from wattledger.cli.dashboards import dashboards
from wattledger.cli.doctor import doctor
from wattledger.cli.influx import influx
from wattledger.cli.report import carbon, report
from wattledger.cli.resend import resend
from wattledger.cli.run import run
from wattledger.cli.slurm import slurm
from wattledger.cli.top import top
from wattledger.util.redact import install_log_redaction, redact_text


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # no password in a URL reaches the log (util/redact.py)


class _Wattledger(click.Group):
    """The command group; a URL's credentials never reach an error message (util/redact.py)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            setattr(e, "message", redact_text(e.message))  # typed Final by click, a plain attribute at run time
            raise


@click.group(cls=_Wattledger, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wattledger")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """wattledger: measure the energy of a shared server and charge it to tagged jobs.

    \b
    Tag a job:      WATTLEDGER_JOB=my-experiment python train.py
    Measure one:    wattledger run -t my-experiment -- python train.py
    The service:    wattledger agent   (see `wattledger doctor` first)
    Read costs:     wattledger report --by job
    A fleet:        wattledger influx setup   (then every agent with --influx-url)
    """
    _setup_logging(verbose)


for command in (agent, doctor, run, report, top, carbon, dashboards, slurm, resend, influx):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
