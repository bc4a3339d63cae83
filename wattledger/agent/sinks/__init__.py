"""Sinks: where points go besides the local ledger."""
