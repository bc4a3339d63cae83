"""Named choices that the config parses once and the accounting uses: plain enums, no behaviour.

``Choice`` is a ``str`` enum whose ``str()`` and ``format()`` are its value, so
a choice prints as the word the admin wrote (``idle``, not
``StaticPolicy.IDLE``) and compares equal to it.
"""

from __future__ import annotations

import enum


class Choice(str, enum.Enum):
    """A str enum that prints as its value (enum.StrEnum arrived only in Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class StaticPolicy(Choice):
    """How a pool's static (idle) energy is charged (``accounting.attribution``)."""

    CAPACITY = "capacity"          # at the capacity rate, by what each job used; unused capacity stays on _idle
    PROPORTIONAL = "proportional"  # like dynamic energy, by the jobs' cost driver
    OCCUPANCY = "occupancy"        # among the jobs holding the device, by holding weight
    IDLE = "idle"                  # all of it to the reserved job _idle
