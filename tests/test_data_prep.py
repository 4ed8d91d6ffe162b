import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_user_error, run_cli, run_main
from data_prep.errors import UserError
from data_prep.procedural import STYLES, render
from data_prep.store import PreparedDataset


def prep(*args, check=0):
    return run_cli("-m", "data_prep", *args, "--no-progress", check=check)


def rejected(store):
    return {json.loads(l)["id"]: json.loads(l)["reason"] for l in (Path(store) / "rejected.jsonl").read_text().splitlines()}


def bomb_png(path, w=30000, h=30000):
    """A PNG whose header claims w*h pixels (over Pillow's limit) with a tiny body."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_procedural_is_deterministic_and_labelled(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    prep("--procedural", 64, "--out", a, "--resolution", 32)
    out = prep("--procedural", 64, "--out", b, "--resolution", 32).stdout
    assert "preview:" in out and (b / "preview.png").exists()
    assert (a / "images.u8").read_bytes() == (b / "images.u8").read_bytes()
    assert (a / "labels.npy").read_bytes() == (b / "labels.npy").read_bytes()
    ds = PreparedDataset(b, verify=True)
    assert ds.class_names == list(STYLES) and len(ds) == 64
    assert np.bincount(ds.labels).tolist() == [16] * 4
    # The styles really differ: mean images of two classes are far apart.
    imgs = np.asarray(ds.images, dtype=np.float32)
    means = [imgs[ds.labels == k].mean(0) for k in range(4)]
    assert min(np.abs(means[i] - means[j]).mean() for i in range(4) for j in range(i + 1, 4)) > 5
    # Different seeds give different art.
    assert not np.array_equal(np.asarray(render(0, 3, 64)[0]), np.asarray(render(1, 3, 64)[0]))


def test_loader_yields_normalized_tensors_and_flips(proc_store):
    import torch

    ds = PreparedDataset(proc_store)
    x, y = ds[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    raw = torch.from_numpy(np.array(ds.images[5])).float() / 127.5 - 1
    assert torch.allclose(x, raw, atol=1e-6) and y == int(ds.labels[5])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=PreparedDataset.collate)
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 32, 32) and torch.allclose(xb[5], x) and yb.tolist() == ds.labels[:16].tolist()
    # default collate gives the same batch
    xd, yd = next(iter(torch.utils.data.DataLoader(ds, batch_size=16)))
    assert torch.equal(xd, xb) and torch.equal(yd, yb)
    # x-flips are indices: len..2*len-1 are the mirror images, in any order and batch
    n = len(ds)
    a, b = [i for i in range(n) if not np.array_equal(ds.images[i], ds.images[i][:, :, ::-1])][:2]  # not symmetric
    mixed = [a, n + a, 7, n + b, b]
    xs, ys = ds.collate(ds.__getitems__(mixed))
    plain = ds.collate(ds.__getitems__([a, a, 7, b, b]))[0]
    assert [torch.equal(x, y) for x, y in zip(xs, plain)] == [True, False, True, False, True]
    assert torch.equal(xs[1], plain[1].flip(-1)) and torch.equal(xs[3], plain[3].flip(-1))
    assert torch.equal(ds[n + a][0], xs[1]) and ys.tolist() == ds.labels[[a, a, 7, b, b]].tolist()


@pytest.fixture()
def messy_folder(tmp_path):
    src = tmp_path / "art"
    (src / "sub dir" / "déjà vu").mkdir(parents=True)
    good = render(0, 0, 96)[0]
    good.save(src / "plain.JPG")
    good.save(src / "sub dir" / "déjà vu" / "naïve painting 1.png")
    rgba = Image.new("RGBA", (80, 80), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 40, 80))
    rgba.save(src / "alpha.png")
    Image.new("LA", (70, 70), (100, 128)).save(src / "la.png")
    pal = Image.new("P", (64, 64), 0)
    pal.paste(1, (32, 0, 64, 64))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(src / "palette.gif", transparency=0)
    Image.new("CMYK", (90, 70), (0, 255, 255, 0)).save(src / "cmyk.jpg")
    Image.fromarray(np.full((64, 64), 65535 // 2, np.uint16)).save(src / "deep16.png")
    Image.new("L", (64, 64), 77).save(src / "gray.bmp")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(src / "img.webp")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(src / "scan.tiff")
    frames = [Image.new("RGB", (64, 64), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (10, 10)).save(src / "tiny.png")
    (src / "zero.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("this is not an image")
    buf = (tmp_path / "t.jpg")
    render(0, 1, 128)[0].save(buf, quality=95)
    data = buf.read_bytes()
    (src / "truncated.jpg").write_bytes(data[: len(data) // 2])
    render(0, 2, 96)[0].save(tmp_path / "c.png")
    raw = bytearray((tmp_path / "c.png").read_bytes())
    raw[60:400] = bytes(340)  # valid header, garbage compressed data
    (src / "corrupt.png").write_bytes(bytes(raw))
    raw = bytearray((tmp_path / "c.png").read_bytes())
    for i in range(200, len(raw) - 40, 97):  # flipped bits in the compressed data, length intact
        raw[i] ^= 0x10
    (src / "bitflip.png").write_bytes(bytes(raw))
    bomb_png(src / "bomb.png")
    (src / ".hidden.png").write_bytes((src / "la.png").read_bytes())
    (src / "readme.txt").write_text("ignored")
    os.symlink("selfloop.png", src / "selfloop.png")
    os.symlink("..", src / "sub dir" / "up")
    shutil.copy(src / "plain.JPG", src / "copy of plain.jpg")
    return src


def test_folder_source_survives_bad_input(messy_folder, tmp_path):
    out = tmp_path / "store"
    res = prep(messy_folder, "--out", out, "--resolution", 32, "--workers", 2)
    reasons = rejected(out)
    assert reasons["zero.jpg"] == "empty_file"
    assert reasons["notes.jpg"] == "not_an_image"
    assert reasons["truncated.jpg"] == "truncated"
    assert reasons["corrupt.png"] == "corrupt"
    assert reasons["bitflip.png"] == "corrupt"  # damaged, not cut short
    assert reasons["bomb.png"] == "decompression_bomb"
    assert reasons["tiny.png"] == "too_small"
    assert reasons["selfloop.png"] == "unreadable"
    assert reasons["sub dir/up"] == "symlink_loop"
    assert reasons["plain.JPG"] == "duplicate" or reasons.get("copy of plain.jpg") == "duplicate"
    ds = PreparedDataset(out, verify=True)
    ids = [e["id"] for e in ds.manifest["images"]]
    for name in ("sub dir/déjà vu/naïve painting 1.png", "alpha.png", "la.png", "palette.gif", "cmyk.jpg",
                 "deep16.png", "gray.bmp", "img.webp", "scan.tiff", "anim.gif"):
        assert name in ids, name
    assert not any(i.startswith(".") for i in ids) and "readme.txt" not in reasons
    px = {i: np.asarray(ds.images[k]).transpose(1, 2, 0) for k, i in enumerate(ids)}
    assert tuple(px["alpha.png"][16, 28]) == (255, 255, 255)  # transparent -> white background
    assert px["alpha.png"][16, 4, 2] > 200 and px["alpha.png"][16, 4, 0] < 50
    assert abs(int(px["deep16.png"][5, 5, 0]) - 127) <= 1  # 16-bit rescaled, not clipped
    assert px["cmyk.jpg"][10, 10, 0] > 200 and px["cmyk.jpg"][10, 10, 1] < 60
    assert tuple(px["anim.gif"][5, 5]) == (200, 0, 0)  # first frame
    assert px["palette.gif"][3, 3].tolist() == [255, 255, 255]  # transparent index
    assert px["palette.gif"][3, 28].tolist() == [10, 200, 30]
    m = ds.manifest
    assert m["skipped"]["empty_file"] == 1 and m["count"] == len(ids)
    assert m["source"]["kind"] == "folder" and all(len(e["sha256"]) == 64 for e in m["images"])
    assert "prepared" in res.stdout


def _drop_dac_caps():
    """Root reads any file; drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH from the bounding set
    so the child (re-exec'd as root) honours file permissions like a normal user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl")


def test_unreadable_permission_is_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        render(0, i, 64)[0].save(src / f"ok{i}.png")
    render(0, 9, 64)[0].save(src / "secret.png")
    os.chmod(src / "secret.png", 0)
    out = tmp_path / "store"
    kw = {"preexec_fn": _drop_dac_caps} if os.geteuid() == 0 else {}
    proc = run_cli("-m", "data_prep", src, "--out", out, "--resolution", 32, "--no-progress", **kw)
    assert proc.returncode == 0, proc.stderr
    assert rejected(out)["secret.png"] == "unreadable"
    assert PreparedDataset(out).count == 3


def test_labels_from_folders_crops_and_dedup(tmp_path):
    src = tmp_path / "art"
    for k, style in enumerate(["cubism", "baroque"]):
        (src / style).mkdir(parents=True)
        for i in range(3):
            render(k, i, 128)[0].resize((160, 100)).save(src / style / f"{i}.png")
    Image.new("RGB", (64, 64)).save(src / "loose.png")
    out = tmp_path / "s"
    prep(src, "--out", out, "--resolution", 32, "--labels-from-folders", "--crop", "pad", "--background", "#00ff00")
    ds = PreparedDataset(out)
    assert ds.class_names == ["baroque", "cubism"] and sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert rejected(out)["loose.png"] == "unlabelled"
    top = np.asarray(ds.images[0])[:, 0, 16]  # letterbox band of a wide image
    assert top.tolist() == [0, 255, 0]
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    prep(src, "--out", r1, "--resolution", 32, "--crop", "random", "--crops-per-image", 3)
    prep(src, "--out", r2, "--resolution", 32, "--crop", "random", "--crops-per-image", 3)
    assert PreparedDataset(r1).count == 7 * 3
    assert (r1 / "images.u8").read_bytes() == (r2 / "images.u8").read_bytes()
    # Near duplicates: a slightly brightened copy survives exact dedup but not --dedup near.
    img = np.asarray(Image.open(src / "cubism" / "0.png")).astype(np.int16)
    Image.fromarray(np.clip(img + 3, 0, 255).astype(np.uint8)).save(src / "cubism" / "0b.png")
    prep(src, "--out", r1, "--resolution", 32)
    prep(src, "--out", r2, "--resolution", 32, "--dedup", "near")
    assert PreparedDataset(r1).count == PreparedDataset(r2).count + 1
    assert "near_duplicate" in rejected(r2).values()
    prep(src, "--out", r2, "--resolution", 32, "--max-images", 2)
    assert PreparedDataset(r2).count == 2


def _hf_dataset(tmp_path, n=24):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "style": datasets.ClassLabel(names=["Cubism", "Impressionism", "Baroque"]),
                               "genre": datasets.Value("string")})
    rows = {"image": [render(3, i, 48)[0] for i in range(n)], "style": [i % 3 for i in range(n)],
            "genre": ["landscape" if i % 2 else "portrait" for i in range(n)]}
    return datasets.Dataset.from_dict(rows, features=feats)


def test_hf_source_saved_and_parquet_with_filters(tmp_path):
    ds = _hf_dataset(tmp_path)
    saved, pq = tmp_path / "saved", tmp_path / "pq"
    ds.save_to_disk(str(saved))
    pq.mkdir()
    ds.to_parquet(str(pq / "train-00000.parquet"))
    out = tmp_path / "s"
    prep("--hf", saved, "--out", out, "--resolution", 32, "--where", "style=Impressionism", "--label-column", "genre")
    d = PreparedDataset(out)
    assert d.count == 8 and d.class_names == ["landscape", "portrait"]
    m = d.manifest
    assert m["source"]["kind"] == "huggingface" and m["source_counters"]["filtered_out"] == 16
    for extra in ([], ["--streaming"]):
        out2 = tmp_path / ("p" + "".join(extra))
        prep("--hf", pq, "--out", out2, "--resolution", 32, "--where", "style=Impressionism", "--where", "style=Baroque",
             "--where", "genre=landscape", "--label-column", "style", *extra)
        d2 = PreparedDataset(out2)
        assert d2.count == 8 and d2.class_names == ["Impressionism", "Baroque"], (extra, d2.class_names)
    assert (tmp_path / "p" / "images.u8").read_bytes() == (tmp_path / "p--streaming" / "images.u8").read_bytes()
    from data_prep.__main__ import main

    def quick(*args):  # validation errors: in-process (importing datasets once, not per call)
        return run_main(main, *args, "--no-progress")

    assert_user_error(quick("--hf", saved, "--out", out, "--resolution", 32, "--where", "styl=Cubism"),
                      "unknown column 'styl'", "genre")
    assert_user_error(quick("--hf", saved, "--out", out, "--resolution", 32, "--where", "style=Rococo"),
                      "Rococo", "Impressionism")
    assert_user_error(quick("--hf", saved, "--out", out, "--resolution", 32, "--where", "genre=sea"),
                      "landscape")
    assert_user_error(quick("--hf", saved, "--out", out, "--resolution", 32, "--image-column", "pic"), "pic")
    assert_user_error(quick("--hf", str(tmp_path / "nope"), "--out", out, "--resolution", 32), "cannot load")
    assert PreparedDataset(out).count == 8  # failures above left the store alone


def test_other_raster_formats_are_read_and_unread_image_files_are_named(tmp_path):
    """Formats artists' and games' files come in that Pillow decodes (Targa, a .jfif JPEG; AVIF
    where this Pillow has it) are read; image files it cannot read (vector art, HEIC, layered
    documents) are named after the run with what to do, not skipped without a word, and a folder
    of nothing else is a one-line error that says so."""
    from data_prep import sources
    from data_prep.__main__ import main

    src = tmp_path / "art"
    (src / "sub").mkdir(parents=True)
    render(0, 0, 64)[0].save(src / "a.png")
    render(0, 1, 64)[0].save(src / "sprite.tga")
    render(0, 2, 64)[0].convert("RGB").save(src / "sub" / "photo.jfif", format="JPEG")
    avif = ".avif" in sources.IMAGE_EXTENSIONS
    if avif:
        render(0, 3, 64)[0].convert("RGB").save(src / "b.avif")
    for name in ("logo.svg", "sub/icon.svg", "phone.heic", "layers.psd"):
        (src / name).write_bytes(b"not decoded")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "store"
    proc = run_main(main, src, "--out", out, "--resolution", 32, "--no-progress", "--workers", 1)
    assert proc.returncode == 0, proc
    ids = {e["id"] for e in PreparedDataset(out).manifest["images"]}
    assert ids == {"a.png", "sprite.tga", "sub/photo.jfif"} | ({"b.avif"} if avif else set())
    note = [line for line in proc.stdout.splitlines() if line.startswith("not read:")]
    assert len(note) == 1, proc.stdout
    assert "2 .svg" in note[0] and "rasterize" in note[0]
    assert "1 .heic" in note[0] and "pillow-heif" in note[0]
    assert "1 .psd" in note[0] and ".txt" not in note[0]
    assert PreparedDataset(out).manifest["source_counters"]["unread_formats"] == {".svg": 2, ".heic": 1, ".psd": 1}
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    (vectors / "one.svg").write_text("<svg/>")
    proc = run_main(main, vectors, "--out", tmp_path / "s2", "--resolution", 32, "--no-progress", "--workers", 1)
    assert_user_error(proc, "no image artgan reads", "1 .svg", "rasterize")
    assert not (tmp_path / "s2").exists()


def test_user_errors_are_one_line(tmp_path, proc_store):
    from data_prep.__main__ import main

    def quick(*args, check=None):  # in-process: validation and small stores; start-up is covered elsewhere
        proc = run_main(main, *args, "--no-progress", "--workers", 1)
        assert check is None or proc.returncode == check, proc
        return proc

    out = tmp_path / "s"
    assert_user_error(quick(tmp_path / "missing", "--out", out, "--resolution", 32, check=None), "does not exist")
    assert_user_error(quick("--procedural", 4, "--out", out, "--resolution", 48, check=None), "power of two")
    assert_user_error(quick("--out", out, "--resolution", 32, check=None), "exactly one source")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(quick(empty, "--out", out, "--resolution", 32, check=None), "no images")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"junk")
    render(0, 0, 64)[0].save(bad / "good.png")
    assert_user_error(quick(bad, "--out", out, "--resolution", 32, check=None), "max-failure-ratio")
    quick(bad, "--out", out, "--resolution", 32, "--max-failure-ratio", "0.9", check=0)
    for i in range(3):
        (bad / f"{i}.png").unlink()
    Image.new("RGB", (8, 8)).save(bad / "good.png")
    assert_user_error(quick(bad, "--out", out, "--resolution", 32, check=None), "no usable images", "too_small")
    assert PreparedDataset(out).count == 1  # the earlier store survived every failed run
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    assert_user_error(quick("--procedural", 4, "--out", precious, "--resolution", 32, check=None), "refusing")
    assert (precious / "thesis.txt").read_text() == "do not delete"
    blocked = precious / "thesis.txt" / "store"  # a file where --out's folder should be
    assert_user_error(quick("--procedural", 4, "--out", blocked, "--resolution", 32, check=None),
                      "cannot write in the folder", "a file is in the way")


def test_store_refuses_mismatched_files(tmp_path, proc_store):
    s = tmp_path / "s"
    shutil.copytree(proc_store, s)
    PreparedDataset(s)
    data = bytearray((s / "images.u8").read_bytes())
    data[10] ^= 0xFF
    (s / "images.u8").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        PreparedDataset(s)
    (s / "images.u8").write_bytes(bytes(data[:-100]))
    with pytest.raises(UserError, match="inconsistent"):
        PreparedDataset(s)
    (s / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed"):
        PreparedDataset(s)
    with pytest.raises(UserError, match="not found"):
        PreparedDataset(tmp_path / "nothing")


def test_preview_shows_every_class(tmp_path):
    """Images arrive sorted by class (folder order); the preview still shows all classes."""
    from data_prep.store import StoreWriter, preview_indices

    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}
    w = StoreWriter(tmp_path / "s", 16)
    for name, n in (("a", 100), ("b", 30), ("c", 3)):
        for i in range(n):
            w.add(np.broadcast_to(np.array(colours[name], np.uint8)[:, None, None], (3, 16, 16)), name, f"{name}/{i}")
    w.commit({"source": {"kind": "test"}}, None)
    tiles = np.asarray(Image.open(tmp_path / "s" / "preview.png")).reshape(8, 16, 8, 16, 3)[:, 0, :, 0]
    seen = {tuple(t) for t in tiles.reshape(-1, 3).tolist()}
    assert set(colours.values()) <= seen
    labels = np.array([0] * 100 + [1] * 30 + [2] * 3 + [-1] * 5)
    idx = preview_indices(labels, 64)
    assert len(idx) == len(set(idx)) == 64 and {int(labels[i]) for i in idx} == {0, 1, 2, -1}
    assert max(i for i in idx if labels[i] == 0) > 90  # spread over the class, not its first files
