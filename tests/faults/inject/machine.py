"""One rank of a multi-process run as if on a machine of its own: it runs train.py from the
folder ARTGAN_MACHINE_DIR names (a format string of the rank, e.g. /tmp/x/machine{rank}), so
relative paths (--outdir runs, --data store) are that machine's own files. The fault suite
launches it with torchrun --no-python; the product never sees this file."""
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
os.chdir(os.environ["ARTGAN_MACHINE_DIR"].format(rank=os.environ["RANK"]))
sys.path.insert(0, str(ROOT))
sys.argv = [str(ROOT / "train.py"), *sys.argv[1:]]
runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
