"""The life-cycle model of one project: CT + T + e*I from its measured phases (a report grouped by phase)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattledger.report.model import Report, ReportError, Row
from wattledger.util.timeutil import iso

SEARCH, TRAIN, INFERENCE = "search", "train", "inference"


@dataclass
class Lifecycle:
    """CT + T + e*I from measured phases (Strubell et al.'s and Lacoste et al.'s accounting).

    Each part also carries its embodied carbon (the hardware's share it was
    charged, wl_embodied): CT and T theirs, I the inference phase's divided by
    the inferences it served; the totals add it to the operational CO2e.

    Energies are facility kWh (IT x PUE), as the footprint EC = energy incl. PUE.
    I is the measured inference energy divided by the number of inferences it
    served; the projection assumes future inferences cost the same, at the same
    mean intensity as the measured ones.
    """

    project: str
    report: Report
    inferences_count: int | None
    expected_inferences: int

    def _phase(self, phase: str) -> Row | None:
        for r in self.report.rows:
            if r.key[0] == phase:
                return r
        return None

    @property
    def owner(self) -> str:
        """Whose project this is (its one owner: the user, or the shared label)."""
        return next((r.key[1] for r in self.report.rows if len(r.key) > 1), "")

    @property
    def ct(self) -> Row | None:
        return self._phase(SEARCH)

    @property
    def t(self) -> Row | None:
        return self._phase(TRAIN)

    @property
    def inference(self) -> Row | None:
        return self._phase(INFERENCE)

    def per_inference(self) -> tuple[float, float] | None:
        """(facility kWh, gCO2e) of one inference, or None when it cannot be known."""
        r = self.inference
        if r is None or not self.inferences_count:
            return None
        return r.facility_kwh / self.inferences_count, r.g_co2e / self.inferences_count

    def check(self) -> None:
        owners = sorted({r.key[1] for r in self.report.rows if len(r.key) > 1})
        if len(owners) > 1:
            raise ReportError(
                f"project {self.project} is used by {len(owners)} owners ({', '.join(owners)}): give --user U "
                "for one of them (a project is its user's, as a job is), or let an admin share the name in "
                "[jobs] shared_projects")
        if self.inference is not None and not self.inferences_count and self.expected_inferences:
            raise ReportError("the project has inference energy: give --inferences-count N (how many inferences "
                              "that energy served) to get the per-inference cost I")
        if self.expected_inferences and self.inference is None:
            raise ReportError(f"no energy with phase={INFERENCE} for project {self.project}: cannot project "
                              f"{self.expected_inferences} inferences (tag runs WATTLEDGER_PHASE=inference)")
        if self.inferences_count is not None and self.inferences_count <= 0:
            raise ReportError("--inferences-count must be a positive number of inferences")

    def per_inference_embodied(self) -> float | None:
        """The embodied gCO2e of one inference: the inference phase's share of the hardware, per inference."""
        r = self.inference
        if r is None or not self.inferences_count:
            return None
        return r.embodied_g / self.inferences_count

    def projected(self) -> tuple[float, float]:
        """(facility kWh, operational gCO2e) of CT + T + e*I."""
        kwh = sum(r.facility_kwh for r in (self.ct, self.t) if r is not None)
        g = sum(r.g_co2e for r in (self.ct, self.t) if r is not None)
        per = self.per_inference()
        if self.expected_inferences and per is not None:
            kwh += self.expected_inferences * per[0]
            g += self.expected_inferences * per[1]
        return kwh, g

    def projected_embodied(self) -> float:
        """Embodied gCO2e of CT + T + e*I: the search and the training carry their share of the hardware,
        each of the e inferences the measured inferences' share per inference."""
        g = sum(r.embodied_g for r in (self.ct, self.t) if r is not None)
        per = self.per_inference_embodied()
        if self.expected_inferences and per is not None:
            g += self.expected_inferences * per
        return g

    def to_dict(self) -> dict[str, Any]:
        def part(r: Row | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"it_kwh": r.it_kwh, "facility_kwh": r.facility_kwh, "g_co2e": r.g_co2e,
                    "embodied_g_co2e": r.embodied_g, "total_g_co2e": r.total_g,
                    "intensity_fallback": r.fallback_it_j > 0, "estimate": r.estimated_it_j > 0}

        per, per_embodied = self.per_inference(), self.per_inference_embodied()
        kwh, g = self.projected()
        embodied = self.projected_embodied()
        other = [r for r in self.report.rows if r.key[0] not in (SEARCH, TRAIN, INFERENCE)]
        return {
            "project": self.project, "owner": self.owner, "since": iso(self.report.since_ns),
            "until": iso(self.report.until_ns), "zone": self.report.zone, "pue": self.report.pue,
            "co2e_basis": self.report.co2e_basis(),
            "search_CT": part(self.ct), "train_T": part(self.t), "inference_measured": part(self.inference),
            "inferences_count": self.inferences_count,
            "per_inference_I": None if per is None else {"facility_kwh": per[0], "g_co2e": per[1],
                                                         "embodied_g_co2e": per_embodied,
                                                         "total_g_co2e": per[1] + (per_embodied or 0.0)},
            "expected_inferences": self.expected_inferences,
            "lifecycle": {"facility_kwh": kwh, "g_co2e": g, "embodied_g_co2e": embodied, "total_g_co2e": g + embodied,
                          "formula": "CT + T + e*I" if self.expected_inferences else "CT + T"},
            "other_phases": {(r.key[0] or "(none)"): part(r) for r in other},
            "notes": self.report.notes(),
        }


def lifecycle(report: Report, project: str, inferences_count: int | None, expected_inferences: int) -> Lifecycle:
    if report.by != "phase":
        raise ReportError("the life-cycle model needs a report grouped by phase")
    lc = Lifecycle(project, report, inferences_count, expected_inferences)
    lc.check()
    return lc
