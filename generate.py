"""New artworks from a trained model: sample, interpolate, mix, project, refine, export.

    python generate.py sample --model runs/00000-demo --seeds 0-63 --grid --out out/
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, model_required=True, cls_help="class name, for conditional models"):
        sp.add_argument("--model", required=model_required, help="run dir, checkpoint dir, exported folder or Hub id")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
        sp.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"), help="autocast for synthesis")
        sp.add_argument("--class", dest="cls", default=None, help=cls_help)
        sp.add_argument("--trunc", type=float, default=1.0, help="truncation psi in [0, 1] (1 = none)")

    def finishing(sp):
        sp.add_argument("--finish", default=None, metavar="STEPS",
                        help="post-process: colour,detail,upscale2 (any of them, comma-separated)")
        sp.add_argument("--finish-ref", default=None, metavar="STORE|IMAGE",
                        help="colour reference (default: the model's training store)")

    s = sub.add_parser("sample", help="one PNG per seed (+ grid.png)")
    common(s, cls_help=f"class name, for conditional models; {ALL_CLASSES} (a conditional model's default): the "
                       "classes in turn (the 1st seed listed gets the 1st class, the 2nd the 2nd, ...; files are "
                       "named seedNNNN-CLASS.png)")
    finishing(s)
    s.add_argument("--seeds", default=None, help="e.g. 0-63,100")
    s.add_argument("--latent", action="append", default=None, metavar="FILE",
                   help="instead of --seeds: a latent saved by `project` (repeat for several)")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--grid", action="store_true", help="also write grid.png")
    s.add_argument("--out", required=True, help="output directory")

    i = sub.add_parser("interpolate", help="a walk through seeds as GIF or MP4")
    common(i)
    i.add_argument("--seeds", default=None, help="waypoints, e.g. 1,5,9")
    i.add_argument("--latent", action="append", default=None, metavar="FILE",
                   help="instead of --seeds: waypoints saved by `project` (repeat, in order)")
    i.add_argument("--frames", type=int, default=48, help="total frames")
    i.add_argument("--fps", type=int, default=24)
    i.add_argument("--loop", action="store_true", help="return to the first seed")
    i.add_argument("--out", required=True, help="walk.gif or walk.mp4")

    m = sub.add_parser("mix", help="style-mixing grid (StyleGAN)")
    common(m)
    m.add_argument("--rows", required=True, help="seeds giving the base image")
    m.add_argument("--cols", required=True, help="seeds whose styles are copied in")
    m.add_argument("--layers", default="coarse", help="coarse | middle | fine | a-b")
    m.add_argument("--out", required=True, help="output PNG")

    r = sub.add_parser("refine", help="push an image toward a style with the VGG style loss")
    common(r, model_required=False)
    finishing(r)
    r.add_argument("--seeds", default=None, help="content = these generated images (needs --model)")
    r.add_argument("--content", default=None, help="content = this image (plain neural style transfer)")
    r.add_argument("--style", action="append", required=True, help="style image (repeat to blend)")
    r.add_argument("--style-blend", default=None, help="weights per --style, e.g. 0.7,0.3")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--size", type=int, default=256, help="long side of the result")
    r.add_argument("--style-weight", type=float, default=1e5)
    r.add_argument("--content-weight", type=float, default=1.0)
    r.add_argument("--tv-weight", type=float, default=1e-2)
    r.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    r.add_argument("--init", choices=("content", "noise"), default="content")
    r.add_argument("--preserve-color", action="store_true")
    r.add_argument("--vgg-precision", choices=("auto", "bf16", "no"), default="auto",
                   help="VGG compute dtype; auto: bf16 with adam (float32 on a CPU without bf16 instructions, "
                        "which emulates it slowly), fp32 with lbfgs (its line search needs an exact objective: "
                        "lbfgs refuses bf16)")
    r.add_argument("--vgg", choices=("vgg19", "vgg16"), default="vgg19", help="feature network for the style loss")
    r.add_argument("--vgg-weights", default=None, help="VGG .pth/.safetensors, or 'random' (tests, offline demos)")
    r.add_argument("--name", default=None, help="output file prefix (default: content name or seedNNNN)")
    r.add_argument("--out", required=True, help="output directory")

    j = sub.add_parser("project", help="find the latent whose image is closest to a target image")
    j.add_argument("targets", nargs="+", metavar="IMAGE", help="target image files")
    j.add_argument("--model", required=True, help="run dir, checkpoint dir, exported folder or Hub id")
    j.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    j.add_argument("--class", dest="cls", default=None, help="class name, for conditional models")
    j.add_argument("--steps", type=int, default=300)
    j.add_argument("--seed", type=int, default=0, help="noise on w (StyleGAN), random starts (DCGAN)")
    j.add_argument("--vgg", choices=("vgg19", "vgg16"), default="vgg19", help="feature network of the distance")
    j.add_argument("--vgg-weights", default=None, help="VGG .pth/.safetensors, or 'random' (tests, offline demos)")
    j.add_argument("--out", required=True, help="output directory")

    v = sub.add_parser("eval", help="SWD / FID / KID / precision-recall against a prepared store")
    common(v)
    v.add_argument("--data", required=True, help="prepared store of real images")
    v.add_argument("--metrics", default="swd,fid,kid,pr",
                   help="comma-separated: swd, fid, kid, pr, lite0 (FD, KID, precision and recall in EfficientNet-Lite0 features)")
    v.add_argument("--num", type=int, default=5000, help="generated (and real) images")
    v.add_argument("--batch", type=int, default=64)
    v.add_argument("--inception-weights", default=None, help="FID Inception-v3 weights file (torch-fidelity format)")
    v.add_argument("--json", default=None, help="also write the results here")
    v.add_argument("--style", action="append", default=None, metavar="IMAGE",
                   help="also report style distance to this image and diversity, over --style-seeds")
    v.add_argument("--style-seeds", default="0-63", help="seeds for the style and diversity figures")
    v.add_argument("--vgg", choices=("vgg19", "vgg16"), default="vgg19")
    v.add_argument("--vgg-weights", default=None, help="VGG .pth/.safetensors, or 'random' (tests, offline)")

    f = sub.add_parser("finish", help="post-process images: colour matching, detail, 2x upscaling")
    f.add_argument("images", nargs="+", help="image files")
    f.add_argument("--steps", default="colour,detail", help="colour,detail,upscale2 (any of them)")
    f.add_argument("--ref", default=None, metavar="STORE|IMAGE", help="colour reference: a prepared store or an image")
    f.add_argument("--out", required=True, help="output directory (same file names, as PNG)")

    st = sub.add_parser("studio", help="explore a model (or a run in progress) in the browser")
    st.add_argument("--model", required=True, help="run dir (follows its newest checkpoint), checkpoint, export or Hub id")
    st.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    st.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"), help="autocast for synthesis")
    st.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    st.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    st.add_argument("--vgg-weights", default=None, help="VGG19 weights for refine and projection, or 'random' (tests)")
    st.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image the page accepts")

    e = sub.add_parser("export", help="safetensors + config.json + model card (+ push to the Hub)")
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True, help="output directory (new or empty)")
    e.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload to this Hub repo id")
    e.add_argument("--private", action="store_true")
    e.add_argument("--space", action="store_true",
                   help="write a Hugging Face Space (Docker SDK) that runs the studio on this model")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from gan.errors import EXIT_DISK_FULL, UserError, disk_full, no_space_left, path_error

    try:
        return COMMANDS[args.cmd](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # Every writer here writes to a temporary name and renames: files already written are
        # complete, the partial one is gone.
        where = getattr(args, "out", None) or getattr(args, "json", None) or getattr(e, "filename", None) or "."
        if not no_space_left(e, where):
            if path_error(e) is not None:  # a path that cannot be read or written
                print(f"error: {path_error(e)}", file=sys.stderr)
                return 2
            raise
        print(f"error: {disk_full(where, 'every file already written is complete; free space and run it again')}",
              file=sys.stderr)
        return EXIT_DISK_FULL


# ---------------------------------------------------------------------------- helpers
def _device(spec: str):
    import torch

    from gan.errors import UserError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available; use --device cpu")
    return dev


ALL_CLASSES = "all"  # sample --class all: a conditional model's classes in turn


def _sampler(args, need_class: bool = True, resolve_class: bool = True):
    from gan.errors import UserError
    from gan.export import load_generator, resolve_model
    from gan.sampling import Sampler

    if not 0.0 <= args.trunc <= 1.0:
        raise UserError(f"--trunc {args.trunc} must be between 0 and 1")
    dev = _device(args.device)
    G, cfg, meta = load_generator(resolve_model(args.model), dev)
    sampler = Sampler(G, cfg, dev, args.precision)
    if not resolve_class or (not need_class and args.cls is None):  # eval: classes from the store (or in turn)
        return sampler, None, meta
    return sampler, sampler.class_index(args.cls), meta


def _out_dir(path: str) -> Path:
    from gan.errors import UserError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {path} is a file; pass a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {path}: cannot create it ({e.strerror or e}); pick another folder") from None
    return out


_SAFE_NAME = re.compile(r"^[\w.\- ]+$")


def _safe_name(name: str) -> str:
    from gan.errors import UserError

    if not _SAFE_NAME.match(name) or name in (".", "..") or name.startswith("."):
        raise UserError(f"--name {name!r}: use a plain file name (letters, digits, . _ - and spaces), "
                        "no directories; outputs always go inside --out")
    return name


def _file_safe(label: str) -> str:
    """A class name as part of a file name: anything but letters, digits, . _ - becomes _."""
    return re.sub(r"[^\w.\-]", "_", label).strip(".") or "class"


def _latent_sampler(args):
    """(sampler, model meta, the --latent files read and checked against the model), before
    anything is written. A projected latent is rendered as it was found: no --class or --trunc."""
    from gan.errors import UserError
    from gan.project import read_latent

    if args.cls is not None or args.trunc != 1.0:
        raise UserError("projected latents are rendered as they were found; drop --class and --trunc")
    sampler, _, meta = _sampler(args, need_class=False)
    return sampler, meta, [read_latent(path, sampler) for path in args.latent]


# ---------------------------------------------------------------------------- commands
def _finisher(args, meta: dict | None):
    """PIL image -> finished image for --finish (identity without it); the colour reference
    defaults to the model's training store when it is on this machine."""
    if not args.finish:
        return lambda im: im
    from gan.errors import UserError
    from gan.finish import finish, parse_steps, reference_stats

    steps = parse_steps(args.finish)
    ref = None
    if "colour" in steps:
        src = args.finish_ref or ((meta or {}).get("train") or {}).get("data")
        if not src or not Path(src).exists():
            raise UserError("--finish colour needs a reference: pass --finish-ref STORE_OR_IMAGE (the model's "
                            "training store is not on this machine)")
        ref = reference_stats(src)
    return lambda im: finish(im, steps, ref)


def cmd_sample(args) -> int:
    import numpy as np
    import torch

    from gan.errors import UserError
    from gan.sampling import grid_cols, grid_image, parse_seeds, save_png, to_uint8
    from PIL import Image

    if (args.seeds is None) == (args.latent is None):
        raise UserError("give --seeds S or --latent FILE (a latent saved by `generate.py project`)")
    if args.batch < 1:
        raise UserError("--batch must be positive")
    if args.latent is not None:
        sampler, meta, latents = _latent_sampler(args)
        items = [(Path(path).stem.removesuffix("_latent"), lat) for path, lat in zip(args.latent, latents)]
        rendered = ((name, sampler.from_latent(lat)[0].cpu()) for name, lat in items)
    else:
        seeds = parse_seeds(args.seeds)
        sampler, _, meta = _sampler(args, resolve_class=False)
        names = sampler.cfg.class_names
        # A conditional model without --class draws its classes in turn, as --class all does unless
        # the model has a class named "all" (then --class all is that class).
        every = (args.cls is None and sampler.cfg.c_dim) or (args.cls == ALL_CLASSES and ALL_CLASSES not in names)
        if every:
            if not sampler.cfg.c_dim:
                raise UserError(f"--class {ALL_CLASSES}: this model is unconditional; drop --class")
            c = torch.arange(len(seeds)) % sampler.cfg.c_dim
            rendered = ((f"seed{seed:04d}-{_file_safe(names[k])}", img)
                        for (seed, img), k in zip(sampler.seeds(seeds, c, args.trunc, args.batch), c.tolist()))
        else:
            c = sampler.class_index(args.cls)
            rendered = ((f"seed{seed:04d}", img) for seed, img in sampler.seeds(seeds, c, args.trunc, args.batch))
    finisher = _finisher(args, meta)
    out = _out_dir(args.out)
    imgs = []
    for name, img in rendered:
        pic = finisher(Image.fromarray(to_uint8(img[None])[0]))
        save_png(pic, out / f"{name}.png")
        if args.grid:
            imgs.append(torch.from_numpy(np.asarray(pic, np.float32) / 127.5 - 1).permute(2, 0, 1))
    if args.grid:
        save_png(grid_image(torch.stack(imgs), grid_cols(len(imgs))), out / "grid.png")
    n = len(args.latent) if args.latent is not None else len(seeds)
    print(f"wrote {n} {'image' if n == 1 else 'images'} to {out}" + (f" (+ {out / 'grid.png'})" if args.grid else ""))
    return 0


def cmd_interpolate(args) -> int:
    from gan.errors import UserError
    from gan.sampling import interpolation_frames, parse_seeds, require_mp4_writer, write_animation

    if (args.seeds is None) == (args.latent is None):
        raise UserError("give the waypoints as --seeds S or as --latent FILE (repeated; saved by `generate.py project`)")
    waypoints = parse_seeds(args.seeds) if args.seeds is not None else args.latent
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise UserError(f"--out {args.out}: use a .gif or .mp4 file name")
    if len(waypoints) < 2 and not args.loop:
        raise UserError(f"{'--seeds' if args.seeds is not None else '--latent'} needs at least two waypoints "
                        "to interpolate between")
    if args.frames < 2 or args.fps < 1:
        raise UserError("--frames must be >= 2 and --fps >= 1")
    if suffix == ".mp4":
        require_mp4_writer()
    if out.exists() and out.is_dir():
        raise UserError(f"--out {args.out} is a directory; pass a file name")
    if args.latent is not None:
        import torch

        from gan.sampling import walk_frames

        sampler, _, latents = _latent_sampler(args)
        classes = {lat["c"] for lat in latents}
        if len(classes) > 1:  # DCGAN takes the class beside z: one walk, one class
            raise UserError("--latent: these latents were projected for different classes; walk one class at a time")
        keys = torch.cat([lat["latent"] for lat in latents])
        frames = walk_frames(sampler, keys, args.frames, args.loop, classes.pop())
    else:
        sampler, c, _ = _sampler(args)
        frames = interpolation_frames(sampler, waypoints, args.frames, args.loop, c, args.trunc)
    write_animation(frames, out, args.fps)
    print(f"wrote {len(frames)} frames to {out}")
    return 0


def cmd_mix(args) -> int:
    from gan.errors import UserError
    from gan.sampling import mixing_grid, mixing_layers, parse_seeds, save_png

    rows, cols = parse_seeds(args.rows), parse_seeds(args.cols)
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: use a .png file name")
    sampler, c, _ = _sampler(args)
    if not sampler.arch.style_mixing:
        raise UserError(f"style mixing is not supported for {sampler.cfg.arch} (it needs a StyleGAN model)")
    layers = mixing_layers(args.layers, sampler.G.num_ws)
    grid = mixing_grid(sampler, rows, cols, layers, c, args.trunc)
    save_png(grid, args.out)
    print(f"wrote {len(rows)}x{len(cols)} mixing grid (w layers {layers.start}-{layers.stop - 1}) to {args.out}")
    return 0


def cmd_refine(args) -> int:
    from gan.errors import UserError
    from gan.integrity import write_atomic
    from gan.refine import RefineOptions, auto_precision, blend_weights, refine, strip
    from gan.sampling import parse_seeds, save_png, to_uint8
    from gan.style import VGGFeatures, load_vgg_state, read_style_images
    from PIL import Image

    from data_prep.images import read_image_arg

    if (args.content is None) == (args.seeds is None):
        raise UserError("give the content as --content IMAGE or as --model MODEL --seeds S")
    if args.seeds is not None and not args.model:
        raise UserError("--seeds needs --model")
    vgg_precision = args.vgg_precision
    if vgg_precision == "auto":
        vgg_precision = auto_precision(args.optimizer, _device(args.device))
    opts = RefineOptions(steps=args.steps, size=args.size, style_weight=args.style_weight,
                         content_weight=args.content_weight, tv_weight=args.tv_weight, optimizer=args.optimizer,
                         init=args.init, preserve_color=args.preserve_color, precision=vgg_precision)
    styles = read_style_images(args.style, flag="--style")
    blend = blend_weights(args.style_blend, len(styles))
    name = _safe_name(args.name) if args.name else None
    contents: list[tuple[str, Image.Image]] = []
    meta = None
    if args.content is not None:
        contents.append((name or _safe_name(Path(args.content).stem), read_image_arg(args.content, "--content")))
        dev = _device(args.device)
    else:
        seeds = parse_seeds(args.seeds)
        sampler, c, meta = _sampler(args)
        dev = sampler.device
        for seed, img in sampler.seeds(seeds, c, args.trunc):
            prefix = f"{name}_seed{seed:04d}" if name and len(seeds) > 1 else (name or f"seed{seed:04d}")
            contents.append((prefix, Image.fromarray(to_uint8(img[None])[0])))
    vgg = VGGFeatures(load_vgg_state(args.vgg_weights, args.vgg), args.vgg)
    finisher = _finisher(args, meta)
    out = _out_dir(args.out)
    for prefix, content in contents:
        result, report = refine(content, styles, blend, vgg, opts, device=dev)
        save_png(result, out / f"{prefix}_refined.png")
        if args.finish:  # the report belongs to _refined.png; the finished image is extra
            save_png(finisher(result), out / f"{prefix}_finished.png")
        before = content.resize(result.size, Image.LANCZOS)
        save_png(strip([before, styles[0], result], result.height), out / f"{prefix}_strip.png")
        summary = {k: report[k] for k in ("start", "end", "scales")}
        write_atomic(out / f"{prefix}_report.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
        s0, s1 = report["start"]["style"], report["end"]["style"]
        print(f"{prefix}: style loss {s0:.4g} -> {s1:.4g} ({100 * (1 - s1 / s0):.0f}% lower), content loss "
              f"{report['end']['content']:.4g}; wrote {out / (prefix + '_refined.png')} and _strip.png")
    return 0


def cmd_studio(args) -> int:
    from studio.server import serve

    if not 0 <= args.port <= 65535:
        from gan.errors import UserError

        raise UserError(f"--port {args.port}: use 0-65535 (0 picks a free port)")
    return serve(args.model, _device(args.device), args.host, args.port, args.precision, args.vgg_weights,
                 args.max_upload_mb)


def cmd_export(args) -> int:
    from gan.export import export_model, push_to_hub, resolve_model

    if args.space:
        from studio.space import export_space

        out = export_space(resolve_model(args.model), Path(args.out), args.push_to_hub or Path(args.out).name)
        print(f"wrote a Space to {out}: run it here with `cd {out} && python app.py`, or push it as a "
              "Hugging Face Space (Docker SDK)")
    else:
        out = export_model(resolve_model(args.model), Path(args.out), args.push_to_hub or Path(args.out).name)
        print(f"exported to {out}")
    if args.push_to_hub:
        push_to_hub(out, args.push_to_hub, args.private)
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


def _style_metrics_setup(args):
    """For eval --style: style distance of the samples to the style image(s) and their diversity,
    over --style-seeds (conditional models: --class, else classes in turn). Inputs are read and
    checked here, before the other metrics run."""
    from gan.errors import UserError
    from gan.metrics.style import sampled_style_report
    from gan.sampling import parse_seeds
    from gan.style import load_vgg_state, read_style_images

    seeds = parse_seeds(args.style_seeds)
    if len(seeds) < 2:
        raise UserError("--style-seeds needs at least two seeds (diversity compares samples)")
    images = read_style_images(args.style, flag="--style")
    state = load_vgg_state(args.vgg_weights, args.vgg)
    return lambda sampler: sampled_style_report(sampler, seeds, args.cls, images, state, args.vgg)


def cmd_eval(args) -> int:
    import time

    from data_prep.store import PreparedDataset
    from gan.errors import UserError
    from gan.metrics import Evaluator, parse_metrics

    names = parse_metrics(args.metrics)
    if args.num < 2 or args.batch < 1:
        raise UserError("--num must be >= 2 and --batch >= 1")
    if args.trunc != 1.0:
        raise UserError("eval measures the untruncated model; drop --trunc")
    sampler, _, meta = _sampler(args, need_class=False)
    ds = PreparedDataset(args.data)
    if ds.resolution != sampler.cfg.resolution:
        raise UserError(f"the store is {ds.resolution}px but the model makes {sampler.cfg.resolution}px images; "
                        "prepare the store at the model's resolution")
    if sampler.cfg.c_dim and sampler.cfg.c_dim != ds.num_classes:
        raise UserError(f"the model has {sampler.cfg.c_dim} classes but the store has {ds.num_classes}")
    ev = Evaluator(names, ds, args.num, None, sampler.device, batch=args.batch,
                   inception_weights=args.inception_weights, progress=True)
    if not ev.names:
        raise UserError(f"none of --metrics {args.metrics} can be computed here (see the note above)")
    style_check = _style_metrics_setup(args) if args.style else None  # bad style input fails before the work
    t = time.perf_counter()
    values = ev.evaluate(sampler, ds.manifest_hash)
    if style_check is not None:
        values.update(style_check(sampler))
    print(f"{'metric':<12} {'value':>12}")
    for k, v in values.items():
        print(f"{k:<12} {v:>12.5g}")
    result = {"model": args.model, "data": str(args.data), "num": ev.total, "kimg": meta.get("kimg"),
              "seconds": round(time.perf_counter() - t, 2), "metrics": values}
    print(json.dumps(result))
    if args.json:
        from gan.integrity import write_atomic

        write_atomic(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    return 0


def cmd_finish(args) -> int:
    from gan.finish import finish, parse_steps, reference_stats
    from gan.sampling import save_png

    from data_prep.images import read_image_arg

    steps = parse_steps(args.steps)
    if "colour" in steps and not args.ref:
        from gan.errors import UserError

        raise UserError("--steps colour needs --ref STORE_OR_IMAGE (the colours to match)")
    pics = [(Path(p), read_image_arg(p, "image")) for p in args.images]  # all readable before anything is written
    ref = reference_stats(args.ref, "--ref") if "colour" in steps else None
    out = _out_dir(args.out)
    for path, pic in pics:
        save_png(finish(pic, steps, ref), out / f"{path.stem}.png")
    print(f"finished {len(pics)} images ({', '.join(steps)}) into {out}")
    return 0


def cmd_project(args) -> int:
    from gan.errors import UserError
    from gan.integrity import write_atomic
    from gan.project import ProjectOptions, project, save_latent, target_tensor
    from gan.refine import strip
    from gan.sampling import save_png, to_uint8
    from gan.style import VGGFeatures, load_vgg_state
    from PIL import Image

    from data_prep.images import read_image_arg

    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    names = [_safe_name(Path(t).stem) for t in args.targets]
    if len(set(names)) != len(names):
        raise UserError("two targets have the same file name; their outputs would overwrite each other")
    targets = [read_image_arg(t, "target") for t in args.targets]  # all readable before anything runs
    args.precision, args.trunc = "no", 1.0
    sampler, c, _ = _sampler(args)
    vgg = VGGFeatures(load_vgg_state(args.vgg_weights, args.vgg), args.vgg)
    out = _out_dir(args.out)
    res = sampler.cfg.resolution
    for name, target in zip(names, targets):
        latent, img, report = project(sampler, target, vgg, ProjectOptions(steps=args.steps, seed=args.seed), c)
        pic = Image.fromarray(to_uint8(img)[0])
        goal = Image.fromarray(to_uint8(target_tensor(target, res))[0])
        save_png(pic, out / f"{name}_projected.png")
        save_png(strip([goal, pic], max(res, 256)), out / f"{name}_strip.png")
        save_latent(out / f"{name}_latent.safetensors", latent, sampler, args.cls, args.model)
        summary = {k: report[k] for k in ("space", "steps", "start", "end")}
        write_atomic(out / f"{name}_report.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
        print(f"{name}: distance {report['start']['distance']:.4g} -> {report['end']['distance']:.4g}, "
              f"PSNR {report['end']['psnr']:.1f} dB; wrote {out / (name + '_projected.png')}, _strip.png and "
              f"_latent.safetensors (render it: generate.py sample --latent)")
    return 0


COMMANDS = {"eval": cmd_eval, "project": cmd_project, "sample": cmd_sample, "interpolate": cmd_interpolate, "mix": cmd_mix, "refine": cmd_refine,
            "export": cmd_export, "finish": cmd_finish, "studio": cmd_studio}

if __name__ == "__main__":
    sys.exit(main())
