from statestore.core.hlc import HybridClock


def test_timestamps_increase_even_when_the_wall_clock_goes_back():
    walls = iter([1000, 1000, 900, 1200, 1100])
    clock = HybridClock(lambda: next(walls))
    stamps = [clock.now() for _ in range(5)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert stamps[0] == (1000, 0) and stamps[2] == (1000, 2) and stamps[3] == (1200, 0)


def test_observed_times_push_later_timestamps_past_them():
    clock = HybridClock(lambda: 1000)
    clock.observe((5000, 7))
    assert clock.now() == (5000, 8)
    clock.observe((10, 0))  # an older time changes nothing
    assert clock.now() == (5000, 9)
