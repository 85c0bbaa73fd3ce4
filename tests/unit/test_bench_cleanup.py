"""A benchmark's stack folder goes when the run ends well and stays when it fails."""

import pytest

from bench.cleanup import stop


class StoppedStack:
    def __init__(self, base):
        self.base = base
        self.stopped = False

    def down(self):
        self.stopped = True


def run(stack, fail):
    try:
        if fail:
            raise RuntimeError("the benchmark broke")
    finally:
        stop(stack)


def test_a_finished_run_removes_its_files(tmp_path):
    base = tmp_path / "stack"
    (base / "local" / "tmp").mkdir(parents=True)
    stack = StoppedStack(base)
    run(stack, fail=False)
    assert stack.stopped and not base.exists()


def test_a_failed_run_keeps_them_and_says_where(tmp_path, capsys):
    base = tmp_path / "stack"
    (base / "logs").mkdir(parents=True)
    stack = StoppedStack(base)
    with pytest.raises(RuntimeError):
        run(stack, fail=True)
    assert stack.stopped and base.exists()
    assert str(base) in capsys.readouterr().err
