"""What the studio holds between requests: the model source, the jobs, each browser tab's uploads
and results, rendered seeds; and the run's logs, read for the page."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import Request

from gan import layout
from gan.errors import UserError

from . import work
from .jobs import Jobs
from .model import ModelSource

MAX_TABS = 64
SEED_CACHE = 4096  # rendered seed PNGs kept


class Tab:
    """What one browser tab uploaded and made: nothing another tab can see."""

    def __init__(self):
        # id -> (file name, the file's bytes): kept compressed (at most --max-upload-mb each) and
        # decoded when used, so a few large images do not hold gigabytes of pixels
        self.uploads: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.files: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # id -> (file name, bytes)
        self.latents: OrderedDict[str, tuple[str, dict]] = OrderedDict()  # id -> (latent file name, latent)
        self.count = 0

    def new_id(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def keep(self, store: OrderedDict, key: str, value, cap: int) -> str:
        store[key] = value
        while len(store) > cap:
            store.popitem(last=False)
        return key


class Studio:
    def __init__(self, spec: str, device, precision: str = "no", vgg_weights: str | None = None,
                 max_upload_mb: float = 20.0, allowed_hosts: set[str] | None = None, poll_s: float = 2.0):
        self.source = ModelSource(spec, device, precision, poll_s)
        self.vgg = work.VGG(vgg_weights)
        self.jobs = Jobs()
        self.max_upload = int(max_upload_mb * 1024 * 1024)
        self.allowed_hosts = allowed_hosts  # None: any Host header (a server bound beyond loopback)
        self._tabs: OrderedDict[str, Tab] = OrderedDict()
        self._seed_pngs: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ state
    def tab(self, request: Request) -> Tab:
        tid = request.headers.get("x-studio-tab") or request.query_params.get("tab") or ""
        if not 8 <= len(tid) <= 64 or not tid.replace("-", "").isalnum():
            raise UserError("this request has no tab id; reload the page")
        with self._lock:
            tab = self._tabs.pop(tid, None) or Tab()
            self._tabs[tid] = tab
            while len(self._tabs) > MAX_TABS:
                self._tabs.popitem(last=False)
            return tab

    def model(self):
        loaded = self.source.current()
        if loaded is None:
            raise UserError(self.source.error or "no model is loaded yet")
        return loaded

    def seed_png(self, loaded, seeds: list[int], cls: str | None, trunc: float) -> list[bytes]:
        """Rendered seeds, from the cache where it has them; the rest in one batch."""
        keys = [(loaded.version, s, cls, trunc) for s in seeds]
        with self._lock:
            have = {k: self._seed_pngs[k] for k in keys if k in self._seed_pngs}
        missing = [k[1] for k in keys if k not in have]
        if missing:
            for seed, data in zip(missing, work.seed_images(loaded, missing, cls, trunc)):
                have[(loaded.version, seed, cls, trunc)] = data
            with self._lock:
                for k in keys:
                    self._seed_pngs[k] = have[k]
                while len(self._seed_pngs) > SEED_CACHE:
                    self._seed_pngs.popitem(last=False)
        return [have[k] for k in keys]

    def info(self) -> dict:
        loaded = self.source.current()
        out = {"error": self.source.error, "run": self.source.run, "model": None,
               "video": _has_video(), "max_upload_mb": round(self.max_upload / 2 ** 20, 1)}
        if loaded is not None:
            s = loaded.sampler
            out["model"] = {"arch": s.cfg.arch, "resolution": s.cfg.resolution, "classes": list(s.cfg.class_names),
                            "mapping": s.arch.mapping, "mixing": s.arch.style_mixing,
                            "num_ws": getattr(s.G, "num_ws", 0), "label": loaded.label, "version": loaded.version,
                            "model_arg": loaded.model_arg, "kimg": loaded.meta.get("kimg")}
        return out

    def run_logs(self) -> dict:
        """Losses, metrics and events of the run being trained (read only)."""
        if not self.source.run:
            return {"run": False}
        run = layout.run_dir_of(Path(self.source.spec))
        stats = _jsonl(run / "stats.jsonl")
        losses = [{"kimg": r["kimg"], **{k[5:]: v for k, v in r.items() if k.startswith("Loss/")}} for r in stats]
        return {"run": True, "losses": _thin(_latest_pass(losses), 400),
                "metrics": _latest_pass(_jsonl(run / "metrics.jsonl")),
                "events": [e.get("event", "") for e in _jsonl(run / "events.jsonl")][-20:]}


def _has_video() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
        return True
    except ImportError:
        return False


def _jsonl(path: Path, tail: int = 4 << 20) -> list[dict]:
    """The dict lines of a JSON-lines file (its last `tail` bytes); a line being written is skipped."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - tail))
            lines = f.read().splitlines()[1 if size > tail else 0:]
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("kimg"), (int, float)):
            out.append(row)
    return out


def _latest_pass(rows: list[dict]) -> list[dict]:
    """After a resume a run logs kimg it had logged before: keep the later pass."""
    out: list[dict] = []
    for r in rows:
        while out and out[-1]["kimg"] >= r["kimg"]:
            out.pop()
        out.append(r)
    return out


def _thin(rows: list, n: int) -> list:
    if len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n - 1)] + [rows[-1]]
