"""The run layout (gan.layout) sits below both training and the readers of a run: readers find a
run's models without importing the trainer, and the layout itself pulls in neither torch nor
accelerate. Checked in a fresh interpreter, where sys.modules shows what an import really loads."""
import json
import subprocess
import sys

from conftest import ROOT

from gan import layout
from gan.training import checkpoint


def loaded_after(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_the_layout_is_a_leaf_and_readers_do_not_reach_into_training():
    mods = loaded_after("import gan.layout")
    assert not [m for m in mods if m.split(".")[0] in ("torch", "accelerate", "datasets")]
    for reader in ("gan.export", "studio.model", "studio.state"):
        mods = loaded_after(f"import {reader}")
        assert not [m for m in mods if m.startswith("gan.training") or m == "accelerate"], reader


def test_design_import_rules_hold():
    """DESIGN.md's arrows: the model, loss, style and metric modules never import accelerate,
    datasets or the CLIs; data_prep never imports gan."""
    mods = loaded_after("import gan.models, gan.losses, gan.style, gan.metrics.fid, gan.metrics.swd, "
                        "gan.metrics.spread, gan.metrics.style")
    assert not [m for m in mods if m.split(".")[0] in ("accelerate", "datasets", "train", "generate", "studio")]
    mods = loaded_after("import data_prep.__main__, data_prep.pipeline, data_prep.sources, data_prep.store")
    assert not [m for m in mods if m.split(".")[0] == "gan"]


def make_checkpoint(run, nimg, export=True, state=True):
    ck = run / "checkpoints" / layout.name_for(nimg)
    ck.mkdir(parents=True)
    if state:
        (ck / layout.STATE).write_text(json.dumps({"cur_nimg": nimg}))
    if export:
        (ck / "export").mkdir()
    return ck


def test_complete_checkpoints_are_the_ones_with_a_state_and_an_export(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    assert layout.latest(run) is None
    a = make_checkpoint(run, 2000)
    b = make_checkpoint(run, 10064)
    make_checkpoint(run, 12000, export=False)  # damaged after the save: no export
    make_checkpoint(run, 13000, state=False)
    (run / "checkpoints" / ".tmp-kimg000014").mkdir()  # a save in progress
    assert layout.complete_checkpoints(run) == [(2000, a), (10064, b)]
    assert b.name == "kimg000010.064"
    assert layout.latest(run) == b
    assert [p.name for p in layout.broken_checkpoints(run)] == ["kimg000012", "kimg000013"]
    # Users point at the checkpoints/ folder as often as at the run.
    assert layout.run_dir_of(run / "checkpoints") == run
    assert layout.run_dir_of(run) == run
    # Training's module still names the same functions (its callers and checkpoints are unchanged).
    assert checkpoint.latest is layout.latest and checkpoint.STATE == layout.STATE
