"""The host lock file and run directory are removed by the last user, without ever letting
two holders of the lock coexist (pure file logic in a temporary RUN_DIR)."""

import threading
import time

import pytest

from testbed.realize import state


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setattr(state, "RUN_DIR", d)
    return d


def test_tidy_removes_lock_and_dir_only_when_nothing_is_left(run_dir):
    state.Journal("a").open()
    state.tidy()
    assert (run_dir / "a").is_dir() and (run_dir / state.HOST_LOCK).exists()
    state.Journal("a").remove()
    state._write_host({"tcp_allowed_congestion_control": {"users": ["b"]}})
    state.tidy()
    assert (run_dir / state.HOST_FILE).exists()
    state._write_host({})
    state.tidy()
    assert not run_dir.exists()
    state.tidy()  # nothing there: nothing to do


def test_tidy_leaves_a_file_it_does_not_know(run_dir):
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("someone else's")
    state.tidy()
    assert (run_dir / "notes.txt").exists() and not (run_dir / state.HOST_LOCK).exists()


def test_lock_holders_never_overlap_while_the_file_is_removed_and_recreated(run_dir):
    inside = 0
    most = 0
    errors = []
    guard = threading.Lock()

    def worker(n: int) -> None:
        nonlocal inside, most
        try:
            for i in range(60):
                if (n + i) % 3 == 0:
                    state.tidy()  # removes the lock file and the directory under the others
                    continue
                with state.locked(run_dir / state.HOST_LOCK):
                    with guard:
                        inside += 1
                        most = max(most, inside)
                    time.sleep(0.0005)
                    with guard:
                        inside -= 1
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert most == 1
