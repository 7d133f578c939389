"""The harness itself: it sees a timeout, a traceback, a crash and memory, and fresh runs agree."""

from __future__ import annotations

import pytest
from hostile_harness import Bar, check_refused, check_reported

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads


def test_exit_status_output_and_traceback(runner, tmp_path):
    r = runner.run("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (r.rc, r.stdout, r.stderr, r.timed_out) == (3, "out\n", "err\n", False)
    assert check_refused(r, "err") == []
    r = runner.run("raise ValueError('boom')")
    assert r.rc == 1 and "Traceback" in r.stderr and "ValueError: boom" in r.stderr
    assert "printed a traceback" in check_refused(r, "boom")
    r = runner.run(["--version"], cwd=tmp_path)
    assert r.rc == 0 and r.stdout.startswith("yoloattn ")
    assert check_reported(r, "yoloattn") == []
    r = runner.run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert r.rc == -11 and "killed by signal 11" in check_refused(r, "x")


def test_timeout_kills_the_case(runner):
    r = runner.run("import time; time.sleep(60)", timeout=1.5)
    assert r.timed_out and r.rc == -9 and 1.4 < r.seconds < 10
    assert any("took" in v for v in check_refused(r, "x", Bar(seconds=1.5)))


def test_peak_memory_is_measured_and_capped(runner):
    base = runner.run("pass").peak_mb
    r = runner.run("import numpy as np; a = np.ones(300 * 2**20 // 8); print(a.sum())")
    assert r.rc == 0 and 250 < r.peak_mb - base < 450, (base, r.peak_mb)
    assert any("peak memory" in v for v in check_refused(r, "x", Bar(peak_mb=base + 200)))
    r = runner.run("b = bytearray(3 * 2**30)", mem_limit_mb=512)  # beyond the address-space cap
    assert r.rc == 1 and "MemoryError" in r.stderr and r.peak_mb - base < 700


def test_fresh_interpreter_runs_the_real_entry_point(runner, tmp_path):
    r = runner.run(["convert", str(tmp_path / "missing.pt")], fresh=True, cwd=tmp_path)
    assert check_refused(r, tmp_path / "missing.pt") == [], r
    forked = runner.run(["convert", str(tmp_path / "missing.pt")], cwd=tmp_path)
    assert (forked.rc, forked.stderr) == (r.rc, r.stderr)
    assert forked.peak_mb < r.peak_mb and forked.inherited_mb > 0  # untouched library pages
    assert abs(forked.fresh_peak_mb - r.peak_mb) < 0.25 * r.peak_mb, (forked, r)
