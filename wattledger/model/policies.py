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


class Unused(Choice):
    """[embodied] unused: where embodied carbon no job used goes (``accounting.embodied``)."""

    IDLE = "idle"      # time-driven ABC: it stays on _idle, reported as unused capacity
    ABSORB = "absorb"  # full absorption: the jobs of the tick carry it, in proportion to what they were charged


class AfterLife(Choice):
    """[embodied] after_end_of_life: what a device accrues once its lifetime is over."""

    STOP = "stop"          # nothing: its footprint has been charged in full
    CONTINUE = "continue"  # the same rate as before (a steady rate; over the life, more than the footprint)
