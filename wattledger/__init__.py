"""wattledger: an energy and carbon ledger for shared compute servers."""

__version__ = "0.1.0"
