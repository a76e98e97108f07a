"""Reading a real process: CPU time, resident memory, and an age on the boot clock that is
never longer than the process has lived."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from modelplane.observe.process import process_age_s, read_process

pytestmark = pytest.mark.timeout(60)


def test_a_new_process_age_is_at_most_the_time_since_it_was_started() -> None:
    before = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        age = process_age_s(psutil.Process(child.pid))
        lived = time.monotonic() - before
        assert age is not None
        # the tick after its start: never longer than it lived, short by one tick at most
        assert 0.0 <= age <= lived
        assert age >= lived - 0.25
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_reading_of_this_process_has_its_cpu_memory_and_age() -> None:
    me = psutil.Process()
    use = read_process(me)
    times = me.cpu_times()
    assert 0 < use.cpu_seconds <= times.user + times.system
    assert use.rss_mib > 10  # a Python interpreter with pytest loaded
    assert use.age_s is not None
    # psutil's own start time is whole seconds off the boot time: a second either way
    assert use.age_s == pytest.approx(time.time() - me.create_time(), abs=1.5)


def test_a_gone_process_reads_as_psutil_says() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    process = psutil.Process(child.pid)
    child.kill()
    child.wait(timeout=10)
    with pytest.raises(psutil.Error):
        read_process(process)
