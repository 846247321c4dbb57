"""The hand-over's own logic (deploy/host/serve.py), by import: when every worker of the new
master serves, the old master's workers stop, and what it gets back if the new one fails.
tests/test_handover.py in the template runs it between real gunicorn masters."""
import os
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
from host import procs, serve


def alive_all(pid):
    return True


def test_every_worker_serves_only_once_each_worker_of_the_new_master_said_so():
    assert not serve.every_worker_serves("", 100, alive_all)
    assert not serve.every_worker_serves("100 101 2\n", 100, alive_all)
    assert serve.every_worker_serves("100 101 2\n100 102 2\n", 100, alive_all)
    assert serve.every_worker_serves("100 101 1\n", 100, alive_all)


def test_lines_of_other_masters_dead_workers_and_garbage_do_not_count():
    smoke = "90 91 1\n"  # the smoke boot's gunicorn reads the same conf
    assert not serve.every_worker_serves(smoke + "100 101 2\n", 100, alive_all)
    assert not serve.every_worker_serves("100 101 2\n100 102 2\n", 100, lambda pid: pid != 102)
    assert not serve.every_worker_serves("100 101 2\n100 101 2\n", 100, alive_all), "one worker counted twice"
    assert not serve.every_worker_serves("100 101 x\n100 -1 2\n100 102\n\0\n", 100, alive_all)
    assert not serve.every_worker_serves("100 101 0\n", 100, alive_all)


def test_the_phased_out_record_names_the_workers_of_its_own_master_only():
    assert serve.phased_out("50 51 52\n", 50) == {51, 52}
    assert serve.phased_out("50 51 52\n", 60) == set(), "a record of another master (pids are reused)"
    assert serve.phased_out(None, 50) == set()
    assert serve.phased_out("50\n", 50) == set()
    assert serve.phased_out("50 x\n", 50) == set()


def test_children_of_lists_a_live_child_and_not_once_it_has_exited():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in procs.children_of(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in procs.children_of(os.getpid())
