"""The CLI's default thread count (``auto_threads``): the idle cores now, not the lagging 1-minute
load average, so the README's command (install, then train) trains on every idle core."""

import os

import pytest

from hypernoise.cli import common


def _loadavg(tmp_path, text: str) -> str:
    path = tmp_path / "loadavg"
    path.write_text(text)
    return str(path)


def test_a_finished_install_does_not_count_as_busy(tmp_path):
    # a pip install that ended seconds ago: 1-minute load 0.95, one runnable task (this process)
    assert common.busy_cores(_loadavg(tmp_path, "0.95 0.40 0.20 1/180 4242\n"), gap_s=0) == 0


def test_running_tasks_besides_this_one_are_busy_cores(tmp_path):
    assert common.busy_cores(_loadavg(tmp_path, "0.00 0.00 0.00 3/180 4242\n"), gap_s=0) == 2


def test_without_proc_loadavg_the_load_average_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    assert common.busy_cores(str(tmp_path / "missing"), gap_s=0) == 1.5
    assert common.busy_cores(_loadavg(tmp_path, "garbled"), gap_s=0) == 1.5


@pytest.mark.parametrize("busy,threads", [(0.0, 2), (0.4, 2), (1.0, 1), (5.0, 1)])
def test_auto_threads_takes_the_idle_cores_and_at_least_one(monkeypatch, busy, threads):
    monkeypatch.setattr(common, "machine_cores", lambda: 2)
    monkeypatch.setattr(common, "busy_cores", lambda: busy)
    assert common.auto_threads("shapes") == threads
    assert common.auto_threads("toy2d") == 1
