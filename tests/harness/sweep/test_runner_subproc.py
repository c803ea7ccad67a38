"""quantbench.common.subproc.run_contained: children end with their timeout, their parent, or a signal to it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from quantbench.common.subproc import PARENT_ENV, run_contained

ROOT = Path(__file__).resolve().parents[2]


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _gone(pid: int, within_s: float = 5.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _wait_for(path: Path, within_s: float = 20.0) -> str:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_success_keeps_log_tail(tmp_path):
    res = run_contained(_py("print('hello'); print('last line')"), timeout_s=30, log_path=tmp_path / "a.log")
    assert (res.returncode, res.timed_out, res.signal_name) == (0, False, "")
    assert res.ok and res.last_line() == "last line" and "hello" in res.log_tail


def test_exit_status_and_crash_signal(tmp_path):
    res = run_contained(_py("import sys; print('boom'); sys.exit(3)"), timeout_s=30, log_path=tmp_path / "b.log")
    assert res.returncode == 3 and res.signal_name == "" and not res.ok
    assert res.describe() == "exited with status 3"
    res = run_contained(_py("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), timeout_s=30,
                        log_path=tmp_path / "c.log")
    assert res.returncode == -signal.SIGSEGV and res.signal_name == "SIGSEGV" and not res.timed_out
    assert "SIGSEGV" in res.describe()


def test_timeout_kills_whole_group(tmp_path):
    pids = tmp_path / "pids"
    code = f"""
        import subprocess, sys, time
        g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
        open({str(pids)!r}, 'w').write(f'{{g.pid}}')
        time.sleep(600)
    """
    res = run_contained(_py(code), timeout_s=3, log_path=tmp_path / "d.log")
    assert res.timed_out and res.signal_name == "SIGKILL"
    assert "timed out after 3 s" == res.describe(3)
    assert res.describe(0.05) == "timed out after 0.05 s"  # the limit that was set, not "0 s"
    assert _gone(int(pids.read_text()))


def test_leftover_grandchild_killed_when_child_exits(tmp_path):
    pids = tmp_path / "pids"
    code = f"""
        import subprocess, sys
        g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
        open({str(pids)!r}, 'w').write(f'{{g.pid}}')
    """
    res = run_contained(_py(code), timeout_s=30, log_path=tmp_path / "e.log")
    assert res.returncode == 0
    assert _gone(int(pids.read_text()))


PARENT = """
import sys, time
from pathlib import Path
from quantbench.common.subproc import run_contained
out = Path(sys.argv[1])
code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
try:
    run_contained([sys.executable, '-c', code, str(out / 'child.pid')], timeout_s=600, log_path=out / 'child.log')
except KeyboardInterrupt as exc:
    (out / 'parent.exc').write_text(type(exc).__name__)
    raise SystemExit(7)
"""


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=_env())
    child = int(_wait_for(tmp_path / "child.pid"))
    return parent, child


@pytest.mark.parametrize("sig, exc_name", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "KeyboardInterrupt")])
def test_signal_to_parent_kills_child_and_raises(tmp_path, sig, exc_name):
    parent, child = _start_parent(tmp_path)
    parent.send_signal(sig)
    assert parent.wait(timeout=20) == 7
    assert (tmp_path / "parent.exc").read_text() == exc_name
    assert _gone(child)


def test_sigkill_of_parent_kills_child(tmp_path):
    parent, child = _start_parent(tmp_path)
    parent.kill()
    parent.wait(timeout=20)
    assert _gone(child)


def test_watch_parent_fallback_without_pdeathsig(tmp_path):
    """A Python child started without PR_SET_PDEATHSIG still dies with its parent through watch_parent."""
    middle = f"""
        import os, subprocess, sys, time
        code = ("import os, sys, time; from quantbench.common.subproc import watch_parent; "
                "watch_parent(0.05); open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)")
        env = dict(os.environ, {PARENT_ENV}=str(os.getpid()))
        subprocess.Popen([sys.executable, '-c', code, {str(tmp_path / 'child.pid')!r}], env=env, start_new_session=True)
        time.sleep(600)
    """
    proc = subprocess.Popen(_py(middle), env=_env())
    child = int(_wait_for(tmp_path / "child.pid"))
    assert psutil.pid_exists(child)
    proc.kill()
    proc.wait(timeout=20)
    assert _gone(child)


def test_missing_executable_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        run_contained([str(tmp_path / "nope")], timeout_s=5, log_path=tmp_path / "f.log")


# ---- what user code starts in a session of its own ends with the contained child ----------------------
ESCAPE = """
import os, subprocess, sys, time
from pathlib import Path
from quantbench.common.subproc import watch_parent
watch_parent()  # as every quantbench worker does at start-up
out = Path(sys.argv[1])
new_session = subprocess.Popen(["sleep", "600"], start_new_session=True)
# double fork: the shell exits at once, its setsid'ed sleep is left without a parent
subprocess.run(["sh", "-c", "setsid sleep 601 & echo $! > " + str(out / "orphan.pid")], check=True)
(out / "escaped.pid").write_text(str(new_session.pid))
if sys.argv[2] == "hang":
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux only")
@pytest.mark.parametrize("how", ["exit", "hang"])
@pytest.mark.slow
def test_processes_started_in_a_new_session_end_with_the_child(tmp_path, how):
    """Not in the child's process group, so the group kill misses them: the child (a subreaper) ends them at
    exit, and run_contained ends its whole tree on a timeout."""
    # the child needs under a second to start its sleeps; "hang" is waited out for 8 s, as a hung cell is
    res = run_contained(_py(ESCAPE) + [str(tmp_path), how], timeout_s=8 if how == "hang" else 60,
                        log_path=tmp_path / "c.log", env=_env())
    assert res.timed_out is (how == "hang"), res.log_tail
    escaped, orphan = int(_wait_for(tmp_path / "escaped.pid")), int(_wait_for(tmp_path / "orphan.pid"))
    assert _gone(escaped) and _gone(orphan)


MODULE = '''
import subprocess, os
import torch

def spawning():
    """A model function that also starts a helper server, in a session of its own (its pid in a file)."""
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.environ["QB_TEST_PIDS"], "a") as fh:
        fh.write(f"{child.pid}\\n")
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
'''


@pytest.mark.slow
@pytest.mark.ort_cpu
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux only")
def test_a_module_model_that_starts_a_child_in_a_new_session_leaves_nothing_running(tmp_path):
    pytest.importorskip("torch")
    from tests.harness.conftest import run_cli, write_config

    (tmp_path / "spawner.py").write_text(MODULE)
    pids = tmp_path / "pids.txt"
    cfg = write_config(tmp_path / "c.toml", tmp_path / "out", '[[variants]]\nname = "fp32"\nprecision = "fp32"\n',
                       eval_samples=20, models='[[models]]\nname = "module:spawner:spawning"\nweights = "random"\n')
    old = dict(os.environ)
    os.environ.update(QB_TEST_PIDS=str(pids), PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path),
                                                                                       old.get("PYTHONPATH")])))
    try:
        proc = run_cli("run", str(cfg), cache=tmp_path / "cache")
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = [int(p) for p in pids.read_text().split()]
    assert started, "the model function ran"
    assert all(_gone(pid) for pid in started)
