"""Long work (projection, refine) in the background: one at a time on a worker thread, with
progress, a cancel, and results kept per browser tab, so browsing stays responsive and two tabs
never see or stop each other's work."""
from __future__ import annotations

import itertools
import threading
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

MAX_JOBS_PER_TAB = 16  # finished ones beyond this are forgotten, oldest first


class Cancelled(Exception):
    """Raised inside a job's progress callback once its cancel was asked for."""


@dataclass
class Job:
    id: str
    tab: str
    kind: str  # "project" | "refine"
    state: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    note: str = ""  # the latest losses, for the page
    error: str = ""
    result: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int, parts: dict) -> None:
        """The callback gan.refine / gan.project call after every step."""
        if self.cancel.is_set():
            raise Cancelled
        self.done, self.total = done, total
        self.note = ", ".join(f"{k} {v:.4g}" for k, v in parts.items() if k in ("style", "content", "distance"))

    def public(self) -> dict:
        out = {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
               "note": self.note, "error": self.error}
        if self.state == "done":
            out["result"] = {k: v for k, v in self.result.items() if not k.startswith("_")}
        return out


class Jobs:
    def __init__(self, workers: int = 1):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="studio-job")
        self._jobs: dict[str, OrderedDict[str, Job]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, tab: str, kind: str, work) -> Job:
        """Run `work(job)` (it returns the result dict) in the background."""
        from gan.errors import UserError

        job = Job(id=f"j{next(self._ids)}", tab=tab, kind=kind)
        with self._lock:
            mine = self._jobs.setdefault(tab, OrderedDict())
            mine[job.id] = job
            while len(mine) > MAX_JOBS_PER_TAB:
                old = next((j for j in mine.values() if j.state not in ("queued", "running")), None)
                if old is None:
                    break
                del mine[old.id]

        def run():
            if job.cancel.is_set():
                job.state = "cancelled"
                return
            job.state = "running"
            try:
                job.result = work(job)
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except UserError as e:
                job.error, job.state = str(e), "failed"
            except Exception as e:  # a bug: the page gets one line, the console the traceback
                traceback.print_exc()
                job.error, job.state = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}", "failed"

        self._pool.submit(run)
        return job

    def get(self, tab: str, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(tab, {}).get(job_id)

    def cancel(self, tab: str, job_id: str) -> Job | None:
        job = self.get(tab, job_id)
        if job is not None:
            job.cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
        return job

    def shutdown(self) -> None:
        with self._lock:
            for mine in self._jobs.values():
                for job in mine.values():
                    job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
