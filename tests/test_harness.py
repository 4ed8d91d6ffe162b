"""The suite's own harness: a warm CLI run (tests/warm.py) behaves as a cold `python` does."""
from conftest import run_cli


def test_warm_cli_runs_exactly_like_a_cold_one(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    runs = [("train.py", "--data", tmp_path / "bad", "--outdir", tmp_path / "runs"),  # a user error: exit 2
            ("generate.py", "sample", "--model", tmp_path / "nope", "--seeds", "0", "--out", tmp_path / "o"),
            ("-m", "data_prep", "--help")]
    for args in runs:
        warm, cold = run_cli(*args), run_cli(*args, cold=True)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert not (tmp_path / "runs").exists()
