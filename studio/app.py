"""The studio's HTTP side: a FastAPI app over ModelSource, Jobs and studio.work. The page (static/)
names things by opaque ids it was given, never by a path on the server."""
from __future__ import annotations

import json
import traceback
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from gan.errors import UserError

from . import work
from .state import Studio, Tab

STATIC = Path(__file__).parent / "static"
PAGES = {"app.js": "text/javascript", "studio.css": "text/css"}
MAX_FILES_PER_TAB = 64
MAX_UPLOADS_PER_TAB = 16
TYPES = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4", ".safetensors": "application/octet-stream"}


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status)


def create_app(studio: Studio) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        studio.jobs.shutdown()

    app = FastAPI(title="artgan studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return _error(400, str(e))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        if studio.allowed_hosts is not None and host not in studio.allowed_hosts:
            # A page on another site that resolves its name to 127.0.0.1 (DNS rebinding) gets nothing.
            return _error(403, f"unexpected Host {host[:80]!r}; open the studio at the address it printed")
        if request.method != "GET" and not request.headers.get("x-studio-tab"):
            return _error(403, "a write without the studio's tab header (cross-site requests are refused)")
        return await call_next(request)

    def guarded(fn):
        """Run a handler body: a user mistake is a 400 with its one line, a bug a 500 with one line."""
        try:
            return fn()
        except UserError as e:
            return _error(400, str(e))
        except Exception as e:
            traceback.print_exc()
            return _error(500, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")

    def file_response(tab_id: str, fid: str, name: str) -> dict:
        return {"id": fid, "name": name, "url": f"/api/file/{fid}?tab={tab_id}"}

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP})

    @app.get("/static/{name}")
    def static(name: str):
        if name not in PAGES:
            return _error(404, "no such file")
        return FileResponse(STATIC / name, media_type=PAGES[name], headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    def info():
        return guarded(studio.info)

    @app.get("/api/run")
    def run_logs():
        return guarded(studio.run_logs)

    @app.post("/api/render")
    async def render(request: Request):
        body = await _json(request)

        def go():
            loaded = studio.model()
            seeds = work.seeds_value(str(body.get("seeds", "")))
            trunc, cls = work.trunc_value(body.get("trunc")), body.get("cls") or None
            studio.seed_png(loaded, seeds, cls, trunc)
            q = _query(trunc, cls)
            return {"version": loaded.version, "label": loaded.label,
                    "images": [{"seed": s, "url": f"/api/seed/{loaded.version}/{s}.png{q}",
                                "command": work.sample_command(loaded, s, cls, trunc)} for s in seeds]}
        return await _threaded(guarded, go)

    @app.get("/api/seed/{version}/{seed}.png")
    def seed_png(version: str, seed: int, trunc: str | None = None, cls: str | None = None, download: int = 0):
        def go():
            loaded = studio.model()
            if version != loaded.version:
                return _error(410, "the model changed since this page asked; it shows the new one now")
            (data,) = studio.seed_png(loaded, work.seeds_value(str(seed), 1), cls or None, work.trunc_value(trunc))
            return _bytes(data, f"seed{seed:04d}.png", download)
        return guarded(go)

    @app.post("/api/mix")
    async def mix(request: Request):
        body = await _json(request)

        def go():
            tab = studio.tab(request)
            data, cmd = work.mix(studio.model(), str(body.get("rows", "")), str(body.get("cols", "")),
                                 str(body.get("layers", "coarse")), body.get("cls") or None,
                                 work.trunc_value(body.get("trunc")))
            fid = tab.keep(tab.files, tab.new_id("f"), ("mix.png", data), MAX_FILES_PER_TAB)
            return {"file": file_response(_tab_id(request), fid, "mix.png"), "command": cmd}
        return await _threaded(guarded, go)

    @app.post("/api/walk")
    async def walk(request: Request):
        body = await _json(request)

        def go():
            tab = studio.tab(request)
            fmt = "mp4" if body.get("format") == "mp4" else "gif"
            seeds, latents = None, None
            if body.get("latents"):
                latents = []
                for lid in body["latents"]:
                    if lid not in tab.latents:
                        raise UserError("a projection of this walk is gone (reload forgets them); project it again")
                    latents.append(tab.latents[lid])
            else:
                seeds = work.seeds_value(str(body.get("seeds", "")), 64)
            data, cmd = work.walk(studio.model(), seeds, latents, _int(body, "frames", 48), _int(body, "fps", 24),
                                  bool(body.get("loop")), body.get("cls") or None, work.trunc_value(body.get("trunc")),
                                  fmt)
            fid = tab.keep(tab.files, tab.new_id("f"), (f"walk.{fmt}", data), MAX_FILES_PER_TAB)
            return {"file": file_response(_tab_id(request), fid, f"walk.{fmt}"), "command": cmd}
        return await _threaded(guarded, go)

    @app.post("/api/upload")
    async def upload(request: Request):
        name = _file_name(request.query_params.get("name", "upload.png"))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > studio.max_upload:
            return _error(413, f"{name} is {int(declared) / 2 ** 20:.1f} MB, over the studio's upload limit of "
                               f"{studio.max_upload / 2 ** 20:g} MB (generate.py studio --max-upload-mb)")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > studio.max_upload:
                return _error(413, f"{name} is over the studio's upload limit of {studio.max_upload / 2 ** 20:g} MB "
                                   "(generate.py studio --max-upload-mb)")

        def go():
            tab = studio.tab(request)
            img = work.decode_upload(data, name)
            uid = tab.keep(tab.uploads, tab.new_id("u"), (name, bytes(data)), MAX_UPLOADS_PER_TAB)
            return {"id": uid, "name": name, "width": img.width, "height": img.height}
        return await _threaded(guarded, go)

    @app.post("/api/project")
    async def project(request: Request):
        body = await _json(request)

        def go():
            tab, loaded = studio.tab(request), studio.model()
            name, img = _upload(tab, body.get("upload"))
            steps, cls = _int(body, "steps", 300), body.get("cls") or None
            loaded.sampler.class_index(cls)  # a wrong class fails now, not in the background

            def job_work(job):
                out = work.project_job(loaded, studio.vgg, img, name, steps, cls, job)
                _publish(tab, request, out)
                lid = tab.keep(tab.latents, tab.new_id("l"), (f"{out['name']}_latent.safetensors", out.pop("_latent")),
                               MAX_UPLOADS_PER_TAB)
                out["latent"] = lid
                return out
            return studio.jobs.submit(_tab_id(request), "project", job_work).public()
        return await _threaded(guarded, go)

    @app.post("/api/refine")
    async def refine(request: Request):
        body = await _json(request)

        def go():
            tab, loaded = studio.tab(request), studio.model()
            content = body.get("content") or {}
            cls, trunc = body.get("cls") or None, work.trunc_value(body.get("trunc"))
            if "upload" in content:
                cname, cimg = _upload(tab, content["upload"])
                content_arg = {"content": cname}
            else:
                seed = work.seeds_value(str(content.get("seed", "")), 1)[0]
                (data,) = studio.seed_png(loaded, [seed], cls, trunc)
                from PIL import Image
                import io

                cimg = Image.open(io.BytesIO(data)).convert("RGB")
                content_arg = {"seeds": seed, "class_": cls, "trunc": work._trunc_flag(trunc)}
            styles, weights = [], []
            for st in body.get("styles") or []:
                styles.append(_upload(tab, st.get("upload")))
                weights.append(float(st.get("weight", 1.0)))
            if not styles:
                raise UserError("drop at least one style image")
            if any(not w >= 0 for w in weights) or not sum(weights) > 0:
                raise UserError("style weights must be >= 0, and not all 0")
            opts = {"steps": _int(body, "steps", 150), "size": _int(body, "size", 256),
                    "style_weight": float(body.get("strength", 1e5)), "preserve_color": bool(body.get("preserve_color"))}
            from gan.finish import parse_steps, reference_stats

            finish_steps = parse_steps(",".join(body.get("finish") or [])) if body.get("finish") else []
            finish_ref = None
            if "colour" in finish_steps:
                store = ((loaded.meta.get("train") or {}).get("data"))
                if store and Path(store).is_dir():
                    finish_ref = (store, reference_stats(store))
                else:  # the training store is not here: the first style image's colours
                    from gan.finish import colour_stats
                    import numpy as np

                    finish_ref = (styles[0][0], colour_stats(np.asarray(styles[0][1])))

            def job_work(job):
                out = work.refine_job(loaded, studio.vgg, cimg, content_arg, styles, weights, opts, finish_steps,
                                      finish_ref, job)
                _publish(tab, request, out)
                return out
            return studio.jobs.submit(_tab_id(request), "refine", job_work).public()
        return await _threaded(guarded, go)

    @app.get("/api/job/{job_id}")
    def job(job_id: str, request: Request):
        def go():
            studio.tab(request)
            j = studio.jobs.get(_tab_id(request), job_id)
            return j.public() if j is not None else _error(404, "no such job in this tab")
        return guarded(go)

    @app.post("/api/job/{job_id}/cancel")
    def cancel(job_id: str, request: Request):
        def go():
            j = studio.jobs.cancel(_tab_id(request), job_id)
            return j.public() if j is not None else _error(404, "no such job in this tab")
        return guarded(go)

    @app.get("/api/file/{fid}")
    def file(fid: str, request: Request, download: int = 0):
        def go():
            tab = studio.tab(request)
            if fid not in tab.files:
                return _error(404, "this result is gone (the studio keeps the newest ones of each tab)")
            name, data = tab.files[fid]
            return _bytes(data, name, download)
        return guarded(go)

    return app


# The page loads only from this server: no CDN, no fonts, no frames, no other origin.
_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _tab_id(request: Request) -> str:
    return request.headers.get("x-studio-tab") or request.query_params.get("tab") or ""


def _query(trunc: float, cls: str | None) -> str:
    from urllib.parse import urlencode

    q = {k: v for k, v in (("trunc", repr(trunc) if trunc != 1.0 else None), ("cls", cls)) if v is not None}
    return "?" + urlencode(q) if q else ""


def _bytes(data: bytes, name: str, download: int) -> Response:
    headers = {"Cache-Control": "private, max-age=3600"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=TYPES.get(Path(name).suffix, "application/octet-stream"), headers=headers)


def _publish(tab: Tab, request: Request, out: dict) -> None:
    """A job's files into the tab's downloads; the result lists them by id."""
    files = []
    for name, data in out.pop("_files").items():
        fid = tab.keep(tab.files, tab.new_id("f"), (name, data), MAX_FILES_PER_TAB)
        files.append({"id": fid, "name": name, "url": f"/api/file/{fid}?tab={_tab_id(request)}"})
    out["files"] = files


def _upload(tab: Tab, uid) -> tuple[str, object]:
    if uid not in tab.uploads:
        raise UserError("that image is no longer uploaded in this tab; drop it again")
    name, data = tab.uploads[uid]
    return name, work.decode_upload(data, name)


def _file_name(name: str) -> str:
    """A display name for an upload: its last path part, printable, short (it appears in commands)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch if ch.isalnum() or ch in "._- " else "_" for ch in base).strip(" .")[:80]
    return clean or "upload.png"


def _int(body: dict, key: str, default: int) -> int:
    v = body.get(key, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"{key} {v!r} is not a whole number") from None


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise UserError("the request is not JSON") from None
    if not isinstance(body, dict):
        raise UserError("the request is not a JSON object")
    return body


async def _threaded(guard, fn):
    """Model work off the event loop, so other requests are answered meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(guard, fn)
