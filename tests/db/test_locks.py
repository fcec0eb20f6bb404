import pytest

from crmctl.db.engine import Database
from crmctl.db.locks import job_lock
from crmctl.errors import LockHeldError


def test_second_holder_is_refused_and_told_who_holds_it(db: Database) -> None:
    with job_lock(db, "health-score", actor="cron"):
        with pytest.raises(LockHeldError) as info, job_lock(db, "health-score", actor="alice"):
            pass
        assert "held by cron" in str(info.value)
        assert info.value.exit_code == 4
        # a different job name or tenant is independent
        with job_lock(db, "erasure-run", actor="alice"):
            pass
    # released: can be taken again
    with job_lock(db, "health-score", actor="alice"):
        pass


def test_lock_waits_when_asked(db: Database) -> None:
    import threading
    import time

    release = threading.Event()
    taken = threading.Event()

    def holder() -> None:
        with job_lock(db, "import", actor="first"):
            taken.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(5)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with job_lock(db, "import", actor="second", wait_seconds=10):
        waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.3
