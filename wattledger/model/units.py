"""Units and the conversions between them: one place, so no module carries its own copy.

Names say the unit: ``J_PER_KWH`` joules in a kilowatt-hour, ``NS_PER_S``
nanoseconds in a second. Energy inside wattledger is joules (float) or
micro-joules (int, at the counters' edge); time is integer nanoseconds.
"""

from __future__ import annotations

J_PER_KWH = 3_600_000.0
J_PER_WH = 3_600.0
UJ_PER_J = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
US_PER_S = 1_000_000
MINUTE_NS = 60 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
DAY_NS = 24 * HOUR_NS
