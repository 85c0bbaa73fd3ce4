"""The floor section (bench/floors.py) and the fleet's CPU table (bench/report.py): written from results."""

from bench.floors import section
from bench.report import _fleet, keep_sections, replace_section


def row(cpu: float, server: float = 0.0) -> dict:
    return {"items": 5000, "cpu_us": cpu + server, "writer_cpu_us": cpu, "server_cpu_us": server, "wall_us": cpu}


def _floors(profile: str, binding_us: float, direct_us: float) -> dict:
    visible = (150 + 40) / 2 + 20 + 15
    return {"state_insert_first_write": row(150.0), "state_update_etag": row(40.0), "state_bulk_read": row(20.0),
            "snapshot_binding": row(binding_us), "snapshot_direct": row(direct_us, 5.0), "publish_event": row(15.0),
            "visible_cpu_us": visible, "update_old_cpu_us": visible + binding_us / 2,
            "update_new_cpu_us": visible + (direct_us + 5.0) / 2, "cores": 2, "profile": profile}  # fmt: skip


def test_the_section_shows_both_snapshot_paths_and_what_the_budget_leaves():
    text = section({"time": "then", "results": _floors("local", 600.0, 95.0)})
    assert "| state: create (first-write insert, 250 a transaction) | 150.0 | 150.0 | 0.0 | 150.0 |" in text
    assert "the new path) | 100.0 | 95.0 | 5.0 |" in text and "the old path) | 600.0 | 600.0 |" in text
    assert "130.0 µs, so at most **15,385 updates/s on 2 cores**" in text
    # 130 + 100 / 2 = 180 µs a fleet update directly, 430 through the binding; 330 - 180 = 150 left.
    assert "**180.0 µs** written directly, against 430.0 µs through the binding" in text
    assert "needs at least 36 CPU-s (was 86)" in text and "leaves **150 µs**" in text
    assert "then 230.0 µs (was 730.0)" in text  # a snapshot after each update


def test_the_scale_section_has_no_local_budget_and_a_negative_leftover_is_shown_as_is():
    assert "budget" not in section({"time": "then", "results": _floors("scale", 600.0, 95.0)})
    assert "leaves **-50 µs**" in section({"time": "then", "results": _floors("local", 600.0, 495.0)})


def test_a_new_report_keeps_the_floor_section_in_its_place():
    old = replace_section("# Benchmarks\n\nold report\n", "floors", "## The floor\nmeasured")
    new = "# Benchmarks\n\n## Targets\n\n<!-- floors:begin -->\n<!-- floors:end -->\n\n## Fleet\n"  # as write_report writes
    kept = keep_sections(new, old)
    assert kept.index("## Targets") < kept.index("## The floor\nmeasured") < kept.index("## Fleet")


def test_the_fleet_rows_report_cpu_per_update_of_each_process():
    row = {"ids": 10, "fields": 2, "applied_per_s": 100, "staleness": {}, "peak_rss_mb": {}, "snapshots_after_s": 1.0,
           "complete": True, "cpu_us_per_update": {"caller": 1, "caller-daprd": 2, "subscriber": 3, "subscriber-daprd": 4,
                                                   "broker": 5},
           "cpu_us_per_update_with_snapshots": {"caller": 1, "caller-daprd": 2, "subscriber": 13, "subscriber-daprd": 4,
                                                "broker": 5, "subscriber-snapshot-writes": 9}}  # fmt: skip
    text = "\n".join(_fleet([{"statestore": row}]))
    assert "| 10 x 2 | statestore | visible | 1 | 2 | 3 | 4 | 5 | 15 | 4 |  |  |" in text
    assert "| 10 x 2 | statestore | + snapshots | 1 | 2 | 13 | 4 | 5 | 25 | 14 | 9 | 5 |" in text


def test_the_targets_table_checks_issue_29s_cpu_budget_misses_first():
    from bench.report import _targets

    cpu = {"caller": 60, "caller-daprd": 40, "subscriber": 110, "subscriber-daprd": 120, "broker": 5, "subscriber-snapshot-writes": 50}
    fleet = {"ids": 100_000, "fields": 2, "applied_per_s": 8000, "snapshots_after_s": 4.0, "peak_rss_mb": {"subscriber": 80},
             "cpu_us_per_update": cpu, "cpu_us_per_update_with_snapshots": {**cpu, "subscriber": 150}}  # fmt: skip
    record = {"results": {
        "fleet": [{"statestore": fleet, "plain-dapr": {"applied_per_s": 900}}],
        "statestore": {"throughput": {"applied_per_s": 13_000}, "latency": {"p50_ms": 0.1},
                       "staleness": [{"offered_per_s": 2000, "p99_ms": 90}, {"offered_per_s": 4000, "p99_ms": 300}]},
        "plain-dapr": {"latency": {"p50_ms": 6.0}},
    }}  # fmt: skip
    text = "\n".join(_targets(record))
    assert "| fleet 100,000 x 2: vs plain Dapr RMW | 8.9x (8,000/s) | >= 8x | yes |" in text
    assert "every process, until visible | 335 | <= 330 | **no** |" in text
    assert "snapshot writes aside, until visible | 120 | <= 110 | **no** |" in text
    assert "until every snapshot is written | 375 | <= 330 | **no** |" in text
    assert "| staleness p99 at 4,000 updates/s offered | 300 ms | < 250 ms | **no** |" in text
    assert text.index("**no**") < text.index("| yes |")  # misses first
