"""The command line: click commands only (parse, call, present). ``main`` is the console script."""

from wattledger.cli.main import main

__all__ = ["main"]
