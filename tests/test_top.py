from __future__ import annotations

from wattledger.report.top import latest_tick, render


def test_latest_tick_power_per_job() -> None:
    node = [
        {"time_ns": 1, "component": "cpu", "device": "package-0", "interval_s": 2.0, "power_w": 10.0},
        {"time_ns": 2, "component": "cpu", "device": "package-0", "interval_s": 2.0, "power_w": 50.0},
        {"time_ns": 2, "component": "gpu", "device": "GPU-1", "interval_s": 2.0, "power_w": 300.0},
    ]
    jobs = [
        {"time_ns": 1, "job": "old", "user": "a", "component": "cpu", "device": "package-0", "energy_j": 20.0, "source": "rapl"},
        {"time_ns": 2, "job": "train", "user": "a", "component": "cpu", "device": "package-0", "energy_j": 80.0, "source": "rapl"},
        {"time_ns": 2, "job": "train", "user": "a", "component": "gpu", "device": "GPU-1", "energy_j": 500.0, "source": "nvml"},
        {"time_ns": 2, "job": "_idle", "user": "", "component": "gpu", "device": "GPU-1", "energy_j": 100.0, "source": "nvml"},
        {"time_ns": 2, "job": "_system", "user": "", "component": "cpu", "device": "package-0", "energy_j": 20.0, "source": "rapl"},
    ]
    t, rows, host_w = latest_tick(jobs, node)
    assert t == 2 and host_w == 350.0
    assert [r.job for r in rows] == ["train", "_idle", "_system"]
    assert rows[0].power_w == {"cpu": 40.0, "gpu": 250.0}
    # jobs add up to the host
    assert sum(r.total_w for r in rows) == host_w
    text = render(t, rows, host_w, ["cpu", "gpu"])
    assert "train" in text and "290.00" in text and "old" not in text
