"""The floor section (bench/floors.py) and the fleet's CPU table (bench/report.py): written from results."""

from bench.floors import section
from bench.report import _fleet, keep_sections, replace_section


def row(cpu: float) -> dict:
    return {"items": 5000, "cpu_us": cpu, "wall_us": cpu}


def _floors(profile: str, snapshot_us: float) -> dict:
    visible = (150 + 40) / 2 + 20 + 15
    return {"state_insert_first_write": row(150.0), "state_update_etag": row(40.0), "state_bulk_read": row(20.0),
            "snapshot_create": row(snapshot_us), "publish_event": row(15.0), "visible_cpu_us": visible,
            "fleet_cpu_s": 100_000 * (2 * visible + snapshot_us) / 1e6, "cores": 2, "profile": profile}  # fmt: skip


def test_the_section_says_what_the_target_leaves_per_update():
    text = section({"time": "then", "results": _floors("local", 600.0)})
    assert "| state: create (first-write insert, 250 a transaction) | 150.0 | 150.0 |" in text
    assert "130.0 µs, so at most **15,385 updates/s on 2 cores**" in text
    # 100,000 x 2 at 12,000/s is 16.7 s, plus 30 s: 93.3 CPU-s; the sidecars take 86 of them.
    assert "86.0 CPU-s" in text and "leaves **37 µs per update**" in text


def test_the_scale_section_has_no_local_target_and_a_negative_leftover_is_shown_as_is():
    assert "12,000" not in section({"time": "then", "results": _floors("scale", 600.0)})
    assert "leaves **-163 µs per update**" in section({"time": "then", "results": _floors("local", 1000.0)})


def test_a_new_report_keeps_the_floor_section_in_its_place():
    old = replace_section("# Benchmarks\n\nold report\n", "floors", "## The floor\nmeasured")
    new = "# Benchmarks\n\n## Targets\n\n<!-- floors:begin -->\n<!-- floors:end -->\n\n## Fleet\n"  # as write_report writes
    kept = keep_sections(new, old)
    assert kept.index("## Targets") < kept.index("## The floor\nmeasured") < kept.index("## Fleet")


def test_the_fleet_rows_report_cpu_per_update_of_each_process():
    row = {"ids": 10, "fields": 2, "applied_per_s": 100, "staleness": {}, "peak_rss_mb": {}, "snapshots_after_s": 1.0,
           "complete": True, "cpu_us_per_update": {"caller": 1, "caller-daprd": 2, "subscriber": 3, "subscriber-daprd": 4}}  # fmt: skip
    assert "| 10 x 2 | statestore | 1 | 2 | 3 | 4 |" in "\n".join(_fleet([{"statestore": row}]))
