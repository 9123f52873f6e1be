"""Speed and ETA shown while migrating: a sliding window that falls to 0 when nothing moves."""
from __future__ import annotations

from engine.progress import RateMeter, format_duration


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_follows_the_recent_pace_and_falls_to_zero_when_nothing_moves():
    clock = Clock()
    meter = RateMeter(window_s=20.0, clock=clock)
    for _ in range(300):  # 30 s at 10 files/s, 1 kB each
        clock.t += 0.1
        meter.add(1, 1000)
    fps, mbps = meter.rates()
    assert abs(fps - 10) < 0.6 and abs(mbps - 0.01) < 0.001
    assert abs(meter.eta(100) - 10) < 1
    for _ in range(100):  # then 20 files/s
        clock.t += 0.05
        meter.add(1, 1000)
    assert 12 < meter.rates()[0] < 13  # 15 s at 10/s and 5 s at 20/s in the window
    clock.t += 60  # waiting for the sending window: the last speed must not stay on screen
    assert meter.rates() == (0.0, 0.0) and meter.eta(100) is None
    assert meter.files == 400 and meter.bytes == 400000


def test_durations_read_like_a_clock():
    assert format_duration(None) == "--:--"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"
