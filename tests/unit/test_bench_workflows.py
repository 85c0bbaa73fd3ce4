"""The workflow bench's section of docs/benchmarks.md: written from the results, replaced in place."""

from bench.workflows import SECTION, update_docs

RUN = {"workflows": 2, "completed": 2, "wall_s": 1.5, "store_locks": 0, "retried": 1, "args_read_first": 2,
       "workflow_ms": {"p50_ms": 1200.0, "p99_ms": 1400.0},
       "activity_ms": {"get_workflow_args": {"p50_ms": 2.0, "p99_ms": 4.0}, "run_step": {"p50_ms": 21.0, "p99_ms": 30.0},
                       "finish": {"p50_ms": 50.0, "p99_ms": 90.0}}}  # fmt: skip
RESULTS = {"parameters": {"workflows": 2, "steps": 3, "step_ms": 20, "lock_s": 3.0, "gap_s": 0.5},
           "runs": {"statestore/locked": RUN}}  # fmt: skip


def test_the_section_replaces_its_old_self_and_keeps_the_other_sections(tmp_path):
    (tmp_path / "benchmarks.md").write_text(f"# Benchmarks\n\n## Before\nkept\n\n{SECTION}\n\nold table\n\n## After\nkept too\n")
    update_docs(RESULTS, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "old table" not in text and text.count(SECTION) == 1
    assert "## Before\nkept" in text and "## After\nkept too" in text
    assert "| statestore/locked | 2.0 / 4.0 | 21.0 / 30.0 | 50.0 / 90.0 | 1.20 / 1.40 | 1.5 (2/2 completed) | 1 | 2/2 |" in text


def test_the_section_is_appended_when_missing(tmp_path):
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n\n## Memory\nx\n")
    update_docs(RESULTS, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert text.index("## Memory") < text.index(SECTION)
