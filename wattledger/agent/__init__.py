"""The daemon and everything that is not a hardware reader."""
