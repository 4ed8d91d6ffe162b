"""generate.py studio in a real browser (Debian's chromium through Playwright) and over plain HTTP:
pictures pixel-identical to generate.py sample, classes, truncation, mixing, walks, refine with
progress and cancel, uploads that are not images or are bombs, two tabs, a run in progress, a
damaged checkpoint, the safety rules, and export --space. One browser for the whole module."""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, assert_user_error, run_cli, run_main
from gan.config import ModelConfig
from gan.export import save_generator
from gan.models import build_generator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TAB = {"X-Studio-Tab": "test-tab-0001"}


def _need_browser():
    if not Path(CHROMIUM).exists():
        msg = "Debian's chromium is not installed (make test installs it: apt-get install -y chromium)"
        if os.environ.get("ARTGAN_BROWSER_TESTS") == "required":
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("playwright.sync_api", reason="pip install 'artgan[test]' (playwright-core for Python)")


class Studio:
    """`generate.py studio` in a subprocess on a free port."""

    def __init__(self, *args):
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "generate.py"), "studio", "--port", "0", *map(str, args)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(f"no address printed: {line!r}\n{self.proc.stderr.read()}")
        self.url = line.split("http://", 1)[1].split("/", 1)[0]
        self.url = f"http://{self.url}/"

    def get(self, path, headers=None, data=None, method=None):
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A randomly initialized conditional StyleGAN (classes, truncation, mixing); no training needed."""
    root = tmp_path_factory.mktemp("studio")
    torch.manual_seed(0)
    cfg = ModelConfig(arch="stylegan", resolution=32, channel_base=512, channel_max=64, mapping_layers=2,
                      z_dim=32, w_dim=32, c_dim=3, class_names=["Baroque", "Cubism", "Impressionism"])
    G = build_generator(cfg)
    for p in G.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    save_generator(G.eval(), cfg, root / "style", extra={"kimg": 1.0})
    return root / "style"


@pytest.fixture(scope="module")
def studio(model):
    s = Studio("--model", model, "--vgg-weights", "random", "--max-upload-mb", 1)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context whose every request must stay on 127.0.0.1."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    outside = []

    def only_localhost(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()
    ctx.route("**/*", only_localhost)
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not outside, f"the page asked for something beyond localhost: {outside}"
    assert not errors, f"JavaScript errors: {errors}"


def image_bytes(pg, selector) -> bytes:
    """The bytes the browser loaded for an <img>, fetched again from the same URL."""
    data = pg.evaluate("""async (sel) => {
        const r = await fetch(document.querySelector(sel).src);
        return Array.from(new Uint8Array(await r.arrayBuffer()));
    }""", selector)
    return bytes(data)


def run_shown_command(cmd: str, out: Path, cwd: Path = ROOT) -> None:
    """The generate.py command the page shows, as printed (only --out is redirected), through
    generate.py's main() in this process (the subprocess tests cover its start-up)."""
    import generate

    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "generate.py"], cmd
    here = os.getcwd()
    os.chdir(cwd)
    try:
        proc = run_main(generate.main, *[a if a != "out/" else str(out) for a in argv[2:]])
    finally:
        os.chdir(here)
    assert proc.returncode == 0, proc.stderr[-2000:]


def set_range(pg, selector, value):
    pg.eval_on_selector(selector, """(el, v) => { el.value = v; el.dispatchEvent(new Event('input'));
                                                  el.dispatchEvent(new Event('change')); }""", str(value))


def test_seeds_truncation_and_classes_match_generate_sample(studio, page, tmp_path):
    pg = page
    pg.goto(studio.url)
    pg.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 32 && "
                         "Array.from(document.querySelectorAll('#thumbs img')).every(i => i.complete && i.naturalWidth)")
    assert "stylegan" in pg.text_content("#model-label")
    pg.select_option("#class", "Cubism")
    set_range(pg, "#trunc", 0.7)
    pg.fill("#seed-start", "40")
    pg.click("#seed-show")
    pg.wait_for_selector('#thumbs figure[data-seed="47"] img')
    pg.click('#thumbs figure[data-seed="47"]')
    pg.wait_for_function("() => document.querySelector('#viewer-img').complete && document.querySelector('#viewer-img').naturalWidth")
    cmd = pg.text_content("#viewer-cmd")
    assert "--seeds 47" in cmd and "--class Cubism" in cmd and "--trunc 0.7" in cmd, cmd
    shown = pixels(image_bytes(pg, "#viewer-img"))
    run_shown_command(cmd, tmp_path / "a")
    assert np.array_equal(shown, pixels((tmp_path / "a" / "seed0047.png").read_bytes()))
    # Another class is another picture, and matches sample for that class too.
    pg.select_option("#class", "Baroque")
    pg.wait_for_function("() => document.querySelector('#viewer-cmd').textContent.includes('Baroque')")
    pg.wait_for_function("() => document.querySelector('#viewer-img').complete && document.querySelector('#viewer-img').naturalWidth")
    other = pixels(image_bytes(pg, "#viewer-img"))
    assert not np.array_equal(shown, other)
    run_shown_command(pg.text_content("#viewer-cmd"), tmp_path / "b")
    assert np.array_equal(other, pixels((tmp_path / "b" / "seed0047.png").read_bytes()))
    # More seeds on demand.
    pg.click("#seed-more")
    pg.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 64")

    # Style mixing: a (rows + 1) x (cols + 1) grid, as generate.py mix draws it.
    pg.click('#tabs button[data-panel="mix"]')
    pg.fill("#mix-rows", "1,2")
    pg.fill("#mix-cols", "3-5")
    pg.click("#mix-go")
    pg.wait_for_function("() => document.querySelector('#mix-img').complete && document.querySelector('#mix-img').naturalWidth")
    mix = pixels(image_bytes(pg, "#mix-img"))
    assert mix.shape == (3 * 32, 4 * 32, 3)
    run_shown_command(pg.text_content("#mix-cmd").replace("mix.png", "out/"), tmp_path / "mix.png")
    assert np.array_equal(mix, pixels((tmp_path / "mix.png").read_bytes()))

    # A walk through seeds plays in the page as a GIF with the frames asked for.
    pg.click('#tabs button[data-panel="walk"]')
    pg.fill("#walk-add", "1,5,9")
    pg.click("#walk-add-go")
    pg.fill("#walk-frames", "12")
    pg.click("#walk-go")
    pg.wait_for_function("() => document.querySelector('#walk-img').complete && document.querySelector('#walk-img').naturalWidth")
    gif = Image.open(io.BytesIO(image_bytes(pg, "#walk-img")))
    assert gif.n_frames == 12 and gif.size == (32, 32)
    assert "--seeds 1,5,9" in pg.text_content("#walk-cmd")

    # Projection: two dropped images become waypoints of a walk through projected latents.
    pg.click('#tabs button[data-panel="project"]')
    pg.fill("#project-steps", "6")
    Image.fromarray(mix[32:64, 0:32]).save(tmp_path / "one.png")  # a row seed of the mixing grid
    for path in (tmp_path / "a" / "seed0047.png", tmp_path / "one.png"):
        pg.set_input_files("#project-file", str(path))
        pg.wait_for_function(f"() => document.querySelector('#project-target').textContent.startsWith('{path.name} (')")
        pg.click("#project-go")
        pg.wait_for_selector("#project-result:not([hidden])", timeout=60_000)
        assert "PSNR" in pg.text_content("#project-psnr")
        names = pg.eval_on_selector_all("#project-files a", "els => els.map(e => e.textContent)")
        assert names == [f"{path.stem}_projected.png", f"{path.stem}_strip.png", f"{path.stem}_latent.safetensors"]
        assert f"project {path.name}" in pg.text_content("#project-cmd")
        pg.click("#project-waypoint")
    pg.click('#tabs button[data-panel="walk"]')
    assert pg.locator("#waypoints .chip").count() == 2  # seeds and projections do not mix in one walk
    pg.click("#walk-go")
    pg.wait_for_function("() => document.querySelector('#walk-cmd').textContent.includes('--latent')")
    assert "--latent seed0047_latent.safetensors --latent one_latent.safetensors" in pg.text_content("#walk-cmd")


def _png(size=(64, 64), colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_refine_progress_cancel_bad_uploads_and_two_tabs(studio, page, browser, tmp_path):
    pg = page
    pg.goto(studio.url)
    pg.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 32")
    pg.click('#tabs button[data-panel="refine"]')
    # A file that is not an image, and a decompression bomb (small file, 144 M pixels): a message in the page.
    (tmp_path / "notes.png").write_text("these are not pixels")
    pg.set_input_files("#refine-styles", str(tmp_path / "notes.png"))
    pg.wait_for_selector("#refine-error:not([hidden])")
    assert "notes.png: not an image" in pg.text_content("#refine-error")
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1 << 20
    pg.set_input_files("#refine-styles", str(tmp_path / "bomb.png"))
    pg.wait_for_function("() => document.querySelector('#refine-error').textContent.includes('bomb')")
    (tmp_path / "big.bmp").write_bytes(b"BM" + os.urandom(1_200_000))  # over --max-upload-mb 1
    pg.set_input_files("#refine-styles", str(tmp_path / "big.bmp"))
    pg.wait_for_function("() => document.querySelector('#refine-error').textContent.includes('upload limit')")
    assert pg.locator("#style-list .chip").count() == 0

    # A long refine shows its progress and stops on Cancel.
    style = tmp_path / "stripes.png"
    arr = np.zeros((96, 96, 3), np.uint8)
    arr[:, ::8] = (20, 60, 220)
    arr[::8] = (240, 200, 30)
    Image.fromarray(arr).save(style)
    pg.set_input_files("#refine-styles", str(style))
    pg.wait_for_selector("#style-list .chip")
    pg.fill("#refine-seed", "3")
    pg.fill("#refine-steps", "2000")
    pg.select_option("#refine-size", "128")
    pg.click("#refine-go")
    pg.wait_for_function("() => document.querySelector('#refine-progress').value >= 3")
    assert pg.is_disabled("#refine-go")
    # Browsing stays responsive meanwhile: thumbnails of new seeds arrive while it runs.
    t = time.perf_counter()
    status, body, _ = studio.get("/api/render", {**TAB, "Content-Type": "application/json"},
                                 json.dumps({"seeds": "500-531", "cls": "Cubism"}).encode())
    assert status == 200 and len(json.loads(body)["images"]) == 32, body
    busy_render = time.perf_counter() - t
    assert pg.evaluate("document.querySelector('#refine-progress').value") < 2000
    pg.click("#refine-cancel")
    pg.wait_for_function("() => document.querySelector('#refine-note').textContent === 'cancelled'")
    assert pg.is_enabled("#refine-go")

    # A short one finishes: before | style | after, the files, and the command that makes them.
    pg.fill("#refine-steps", "8")
    pg.check('.finish[value="detail"]')
    pg.click("#refine-go")
    pg.wait_for_selector("#refine-result:not([hidden])", timeout=120_000)
    strip = pixels(image_bytes(pg, "#refine-img"))
    assert strip.shape[0] == 128 and strip.shape[1] > 3 * 128
    names = pg.eval_on_selector_all("#refine-files a", "els => els.map(e => e.textContent)")
    assert names == ["seed0003_refined.png", "seed0003_strip.png", "seed0003_finished.png"]
    cmd = pg.text_content("#refine-cmd")
    for part in ("refine", "--seeds 3", "--style stripes.png", "--steps 8", "--size 128", "--finish detail",
                 "--class Baroque", "--vgg-weights random", "--optimizer adam"):
        assert part in cmd, (part, cmd)
    refined = pg.evaluate("""async () => {
        const a = Array.from(document.querySelectorAll('#refine-files a')).find(a => a.textContent.endsWith('_refined.png'));
        return Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer())); }""")
    run_shown_command(cmd, tmp_path / "r", cwd=tmp_path)
    assert np.array_equal(pixels(bytes(refined)), pixels((tmp_path / "r" / "seed0003_refined.png").read_bytes()))

    # A second tab has its own uploads and jobs: it cannot see the first one's.
    other = browser.new_context().new_page()
    other.goto(studio.url)
    other.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 32")
    job = pg.get_attribute("#refine-job", "data-job")
    ask = "(id) => fetch('/api/job/' + id, {headers: {'X-Studio-Tab': TAB}}).then(r => r.status)"
    assert pg.evaluate(ask, job) == 200
    assert other.evaluate(ask, job) == 404
    other.click('#tabs button[data-panel="refine"]')
    assert other.locator("#style-list .chip").count() == 0
    other.context.close()
    print(f"32 thumbnails while a refine runs: {busy_render:.2f} s")


def test_http_rules_and_cli_errors(studio, model, tmp_path):
    assert studio.url.startswith("http://127.0.0.1:")
    status, body, _ = studio.get("/api/info", {"Host": "attacker.example"})
    assert status == 403 and b"unexpected Host" in body
    status, body, _ = studio.get("/api/render", {"Content-Type": "application/json"}, b'{"seeds": "0"}')
    assert status == 403  # no tab header: what a cross-site form would send
    for path in ("/static/../generate.py", "/static/app.py", "/api/file/..%2F..%2Fetc%2Fpasswd?tab=test-tab-0001"):
        assert studio.get(path)[0] == 404, path
    status, body, _ = studio.get("/api/render", {**TAB, "Content-Type": "application/json"},
                                 b'{"seeds": "0", "cls": "Rococo"}')
    assert status == 400 and "unknown class 'Rococo'" in json.loads(body)["error"]
    status, body, _ = studio.get("/api/upload?name=../../etc/x.png", TAB, b"GIF89a-not-really")
    assert status == 400 and json.loads(body)["error"].startswith("x.png: ")
    # Beyond loopback only when asked, and then with a warning.
    wide = Studio("--model", model, "--host", "0.0.0.0")
    assert wide.get("/api/info", {"Host": "studio.example:80"})[0] == 200  # any name reaches a server bound wide
    assert "warning: --host 0.0.0.0 serves the studio to every machine" in wide.stop()
    # CLI mistakes: one line, exit 2.
    import generate

    assert_user_error(run_main(generate.main, "studio", "--model", tmp_path / "missing"), "no such file")
    assert_user_error(run_main(generate.main, "studio", "--model", model, "--port", "70000"), "--port")
    busy = studio.url.rsplit(":", 1)[1].strip("/")
    assert_user_error(run_main(generate.main, "studio", "--model", model, "--port", busy), "in use")


def test_follows_a_run_and_reports_a_damaged_checkpoint(proc_store, page, tmp_path):
    runs = tmp_path / "runs"
    train = ("train.py", "--data", proc_store, "--arch", "dcgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16,
             "--batch", 16, "--log-every", 1, "--outdir", runs, "--name", "live")
    run_cli(*train, "--kimg", 0.032, check=0)
    (run,) = runs.iterdir()
    s = Studio("--model", run)
    try:
        pg = page
        pg.goto(s.url)
        pg.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 32")
        assert "kimg 0.032" in pg.text_content("#model-label")
        pg.click('#tabs button[data-panel="run"]')
        pg.wait_for_selector("#run-losses svg polyline")
        first = image_bytes(pg, '#thumbs figure[data-seed="0"] img')
        run_cli(*train, "--kimg", 0.064, "--resume", "auto", check=0)  # a new checkpoint lands while it shows
        pg.wait_for_selector("#notice:not([hidden])", timeout=30_000)
        assert "kimg 0.064" in pg.text_content("#notice")
        pg.wait_for_function("() => document.querySelector('#thumbs img').src.includes('kimg000000.064')")
        assert image_bytes(pg, '#thumbs figure[data-seed="0"] img') != first
        files = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
        pg.click('#tabs button[data-panel="run"]')
        pg.wait_for_timeout(2500)  # a poll or two more: the studio only reads the run
        assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")} == files
    finally:
        s.stop()
    # Every checkpoint of a run damaged: the page says so (no traceback anywhere).
    for ck in (run / "checkpoints").iterdir():
        (ck / "export" / "model.safetensors").write_bytes(b"damaged")
    s = Studio("--model", run)
    try:
        pg.goto(s.url)
        pg.wait_for_selector("#model-error:not([hidden])")
        assert "damaged" in pg.text_content("#model-error") or "verif" in pg.text_content("#model-error")
    finally:
        err = s.stop()
    assert "Traceback" not in err, err


def test_export_space_runs_the_same_studio(model, tmp_path):
    run_cli("generate.py", "export", "--model", model, "--out", tmp_path / "space", "--space", check=0)
    space = tmp_path / "space"
    for f in ("app.py", "Dockerfile", "requirements.txt", "README.md", "model/model.safetensors", "model/config.json",
              "studio/static/app.js", "gan/sampling.py", "generate.py"):
        assert (space / f).is_file(), f
    assert "sdk: docker" in (space / "README.md").read_text()
    reqs = (space / "requirements.txt").read_text()
    assert "fastapi" in reqs and "torch" in reqs and "pytest" not in reqs
    env = dict(os.environ, PORT="0", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = "http://" + line.split("http://", 1)[1].split("/", 1)[0] + "/"
        req = urllib.request.Request(url + "api/render", data=b'{"seeds": "4", "cls": "Impressionism"}',
                                     headers={**TAB, "Content-Type": "application/json"})
        res = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert res["images"][0]["command"].startswith("python generate.py sample --model model ")
        png = urllib.request.urlopen(url + res["images"][0]["url"].lstrip("/"), timeout=60).read()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    run_shown_command(res["images"][0]["command"].replace("--model model", f"--model {model}"), tmp_path / "s")
    assert np.array_equal(pixels(png), pixels((tmp_path / "s" / "seed0004.png").read_bytes()))
    assert_user_error(run_cli("generate.py", "export", "--model", model, "--out", space, "--space"), "not an empty")
