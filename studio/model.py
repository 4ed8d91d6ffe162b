"""The model the studio shows: a fixed model, or a run in progress whose newest checkpoint it
follows. It reads the model's files and never writes anywhere."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gan import layout
from gan.errors import UserError


@dataclass
class Loaded:
    sampler: object  # gan.sampling.Sampler
    meta: dict  # the export's config.json
    path: Path  # the export folder it came from
    model_arg: str  # what `generate.py --model` takes to render the same images
    label: str  # for the page: "kimg 26.2" or the folder name
    version: str  # changes whenever another model is loaded (cache keys, image URLs)


def is_run(spec: str) -> bool:
    """A run dir, or its checkpoints/ folder: a model that grows while it trains."""
    p = layout.run_dir_of(Path(spec))
    return (p / "checkpoints").is_dir() and not (p / "model.safetensors").exists()


class ModelSource:
    """`current()` is the newest loadable model; for a run it looks for a newer checkpoint at
    most every `poll_s` seconds. A damaged or missing checkpoint leaves the previous model in
    place and its one-line reason in `error`, for the page to show."""

    def __init__(self, spec: str, device, precision: str = "no", poll_s: float = 2.0):
        self.spec, self.device, self.precision, self.poll_s = spec, device, precision, poll_s
        self.run = is_run(spec)
        self.error: str | None = None
        self._loaded: Loaded | None = None
        self._checked = float("-inf")
        self._count = 0
        self._lock = threading.Lock()

    def current(self) -> Loaded | None:
        with self._lock:
            now = time.monotonic()
            if self._loaded is not None and (not self.run or now - self._checked < self.poll_s):
                return self._loaded
            self._checked = now
            try:
                from gan.export import resolve_model

                path = resolve_model(self.spec)
                if self._loaded is None or path != self._loaded.path:
                    self.error = None
                    self._loaded = self._load_or_older(path)
            except UserError as e:
                self.error = str(e)
            return self._loaded

    def _load_or_older(self, path: Path) -> Loaded:
        """The model at `path`; for a run whose newest checkpoint is damaged, the newest that verifies."""
        try:
            return self._load(path)
        except UserError as e:
            if not self.run:
                raise
            good = layout.newest_good(layout.run_dir_of(Path(self.spec)), exclude=path.parent)
            if good is None or (self._loaded is not None and good / "export" == self._loaded.path):
                raise UserError(f"the newest checkpoint cannot be loaded ({e})"
                                + (f"; still showing {self._loaded.label}" if self._loaded else "")) from None
            loaded = self._load(good / "export")
            self.error = f"the newest checkpoint cannot be loaded ({e}); showing {loaded.label}"
            return loaded

    def _load(self, path: Path) -> Loaded:
        from gan.export import load_generator
        from gan.sampling import Sampler

        G, cfg, meta = load_generator(path, self.device)
        self._count += 1
        if self.run:  # name the checkpoint, so the command renders this model even after newer ones land
            ckpt = path.parent
            model_arg = str(Path(self.spec) / "checkpoints" / ckpt.name) if Path(self.spec).name != "checkpoints" \
                else str(Path(self.spec) / ckpt.name)
            kimg = meta.get("kimg")
            label = f"kimg {kimg:g}" if isinstance(kimg, (int, float)) else ckpt.name
        else:
            model_arg, label = self.spec, Path(self.spec).name or self.spec
        return Loaded(Sampler(G, cfg, self.device, self.precision), meta, path, model_arg, label,
                      f"{self._count}-{path.parent.name if self.run else 'model'}")
