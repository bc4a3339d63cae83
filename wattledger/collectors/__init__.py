"""Hardware and process readers. One module per source, same small protocol (see base.py)."""
