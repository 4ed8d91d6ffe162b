"""`generate.py export --space DIR`: a folder that runs the same studio as a Hugging Face Space
(Docker SDK): the exported model, the artgan code that serves it, app.py, requirements.txt,
a Dockerfile and the Space's README. `python app.py` inside it runs it locally too."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from gan.errors import UserError

APP = '''"""Hugging Face Space: the artgan studio on the model in ./model (python app.py runs it locally)."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the artgan code copied beside this file, the version that exported the model
os.chdir(HERE)  # commands the page shows name the model as `model`

from gan.errors import UserError  # noqa: E402
from studio.server import serve  # noqa: E402

if __name__ == "__main__":
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        sys.exit(serve("model", device, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "7860")),
                       vgg_weights=os.environ.get("ARTGAN_VGG_WEIGHTS") or None))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
'''

DOCKERFILE = """FROM python:3.11-slim
RUN useradd -m -u 1000 user
WORKDIR /home/user/app
COPY requirements.txt .
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY --chown=user . .
USER user
ENV HOST=0.0.0.0 PORT=7860
EXPOSE 7860
CMD ["python", "app.py"]
"""

README = """---
title: {name}
sdk: docker
app_port: 7860
tags: [artgan, gan, art]
---
# {name}

The artgan studio on a {arch} model ({resolution}x{resolution}): seeds, truncation, classes,
walks, projection and refine in the browser. The model and its card are in `model/`.

Run it here: `pip install -r requirements.txt && python app.py`, then open http://127.0.0.1:7860/.
Push this folder to a Hugging Face Space with the Docker SDK to share it.
"""

CODE = ("gan", "data_prep", "studio")
FALLBACK_REQUIREMENTS = ["torch>=2.4", "torchvision>=0.19", "pillow>=10.0", "scipy>=1.10", "numpy>=2.0",
                         "tqdm>=4.60", "safetensors>=0.4", "huggingface_hub>=0.20", "datasets>=2.16",
                         "accelerate>=1.1", "tensorboard>=2.12", "fastapi>=0.110", "uvicorn>=0.29"]


def requirements() -> list[str]:
    """artgan's own requirements and its studio extra, as this install declares them."""
    from importlib import metadata

    try:
        reqs = metadata.requires("artgan") or []
    except metadata.PackageNotFoundError:
        return FALLBACK_REQUIREMENTS
    out = []
    for r in reqs:
        spec, _, marker = r.partition(";")
        if not marker.strip() or "extra == \"studio\"" in marker.replace("'", '"'):
            if not spec.strip().startswith("artgan"):
                out.append(spec.strip())
    return out or FALLBACK_REQUIREMENTS


def export_space(src: Path, out: Path, name: str) -> Path:
    """Complete or absent: built beside `out` under a temporary name, then renamed into place."""
    import generate

    from gan.export import export_model, load_generator, rename_into_place

    _, cfg, _ = load_generator(src)  # a damaged model fails before anything is written
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; pick a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        export_model(src, tmp / "model", name)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for pkg in CODE:
            shutil.copytree(Path(__import__(pkg).__file__).parent, tmp / pkg, ignore=skip)
        shutil.copy2(generate.__file__, tmp / "generate.py")
        (tmp / "app.py").write_text(APP)
        (tmp / "Dockerfile").write_text(DOCKERFILE)
        (tmp / "requirements.txt").write_text("\n".join(requirements()) + "\n")
        (tmp / "README.md").write_text(README.format(name=name, arch=cfg.arch, resolution=cfg.resolution))
        rename_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
