"""Issue 27: what `make up`, `make status` and `make down` know of a stack started by an
earlier command (no process is started here)."""

from pathlib import Path

from statestore.devstack import Ports, Stack


def test_a_later_command_finds_the_replicas_on_the_ports_up_gave_them(tmp_path: Path):
    first = Stack(tmp_path, Ports.free(), profile="scale")
    kept, dropped = first.replicas
    first.remove_replica(dropped)  # saves what is left (run/replicas.json), as up does
    later = Stack(tmp_path, Ports.free(), profile="scale")
    assert later.replica_specs[kept[0].name] == first.replica_specs[kept[0].name]
    assert len(later.replicas) == 2  # the profile's count; the second on new free ports
    assert later.replicas[0][0].pid_path == kept[0].pid_path


def test_status_names_each_part_that_is_down_and_the_command_that_starts_it(tmp_path: Path):
    stack = Stack(tmp_path, Ports.free(), profile="scale")
    problems = stack.problems()
    for app, _ in stack.subscriber_pairs():
        assert f"{app.name}: the subscriber app and its sidecar are not running. Start them: `make up`." in problems
    assert any(p.startswith("the caller sidecar is not running") and "`make up`" in p for p in problems)
