"""docs/coming-from.md: every hrm-ray command of its table runs (in-process, at dry-run size: a tiny model,
a few records) in a workspace holding the paths the table names; and the seed's and the fork's forms the
table relies on map onto the config as the notes say."""
from __future__ import annotations

import re
import shlex
import shutil
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from hrm_ray.cli import main as cli_main
from hrm_ray.config import build_config, load_yaml
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "coming-from.md"
LM_TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--h_layers", "1",
           "--l_layers", "1", "--batch_size", "4", "--eval_batch_size", "8", "--max_val_samples", "8",
           "--synthetic_train_size", "64", "--synthetic_val_size", "8", "--num_workers", "0", "--wandb", "off"]
LM_TRAIN = ["--steps", "2", "--val_every", "2", "--warmup_steps", "1", "--log_steps", "1"]
PUZZLE_TINY = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=1",
               "arch.L_cycles=1", "arch.puzzle_emb_ndim=32", "arch.halt_max_steps=2", "global_batch_size=8",
               "epochs=2", "eval_interval=1", "--wandb", "off"]
# What each command gets appended in the test (later flags win): the size, never the form under test.
TEST_SIZE = {"data prepare": ["--max-files", "1", "--max-records", "40", "--overwrite"],
             "generate": ["--max_new_tokens", "3"],
             "puzzle-data sudoku": ["--puzzles", "puzzles.txt", "--num-aug", "1", "--test-size", "2",
                                    "--subsample-size", "6", "--workers", "1"]}


def table_rows() -> list[tuple[str, str, str]]:
    """(from, their command, hrm-ray command) of each row of the doc's table."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[2].startswith("`") and cells[0] != "from":
            rows.append((cells[0], cells[1], cells[2].strip("`")))
    return rows


def dry(argv: list[str]) -> bool:
    at = argv.index("--dry_run") if "--dry_run" in argv else -1
    return at >= 0 and (at + 1 == len(argv) or argv[at + 1] != "0")


def size_flags(argv: list[str]) -> list[str]:
    if argv[0] == "train":
        puzzle = any(a.startswith(("arch=", "data_path=")) or "cfg_pretrain" in a for a in argv)
        return PUZZLE_TINY if puzzle else LM_TINY + ([] if dry(argv) else LM_TRAIN)
    return next((extra for key, extra in TEST_SIZE.items() if " ".join(argv[:len(key.split())]) == key), [])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, real_data: Path, ray_session) -> Path:
    """The paths the table names: raw text, a prepared dataset (and a copy, and two chunks to merge), a
    Sudoku puzzle dataset, an arch YAML and a Hydra config, a QA file, and a trained run 'arithmetic-demo'."""
    root = tmp_path_factory.mktemp("coming_from")
    shutil.copytree(real_data / "wikitext2", root / "data" / "raw")
    shutil.copytree(DOC.parents[1] / "experiments" / "configs", root / "experiments" / "configs")
    assert cli_main(["data", "prepare", "--source", str(root / "data" / "raw"), "--dest", str(root / "data" / "prepared"),
                     "--vocab-size", "300", "--max-seq-len", "64", "--max-files", "1", "--max-records", "60"]) == 0
    shutil.copytree(root / "data" / "prepared", root / "data" / "prepared-b")
    for chunk in ("chunk_000", "chunk_001"):
        shutil.copytree(root / "data" / "prepared", root / "data" / "batches" / chunk)
    puzzles = [ln for ln in (real_data / "sudoku" / "top95.txt").read_text().splitlines() if ln.strip()][:12]
    (root / "puzzles.txt").write_text("\n".join(puzzles) + "\n")
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(root / "data" / "sudoku"), puzzles=str(root / "puzzles.txt"),
                                           num_aug=1, test_size=2, workers=1), log=lambda _: None)
    (root / "config" / "arch").mkdir(parents=True)
    (root / "config" / "arch" / "my_gated_config.yaml").write_text(
        "defaults:\n  - hrm_v1_gated\nhidden_size: 256\nH_layers: 2\nL_layers: 2\ngate_hidden_ratio: 0.3\n"
        "gate_init_bias: -1.5\n")
    (root / "config" / "cfg_pretrain.yaml").write_text(
        "defaults:\n  - arch: hrm_v1_gated\n  - _self_\nhydra:\n  output_subdir: null\ndata_path: data/sudoku\n"
        "global_batch_size: 768\nepochs: 100000\neval_interval: 10000\ncheckpoint_every_eval: True\nlr: 1e-4\n"
        "lr_warmup_steps: 2000\npuzzle_emb_lr: 1e-2\n")
    (root / "squad").mkdir()
    (root / "squad" / "train.jsonl").write_text(
        '{"data": {"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"]}}}\n')
    return root


@pytest.fixture
def in_workspace(workspace: Path, monkeypatch) -> Path:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HRM_RAY_STORAGE", str(workspace / "runs"))
    if not (workspace / "runs" / "arithmetic-demo" / "best-model").is_dir():  # the run generate/init_from read
        assert cli_main(["train", "--dataset", "synthetic", "--run_name", "arithmetic-demo", *LM_TINY, *LM_TRAIN]) == 0
    return workspace


def test_the_table_has_every_document_s_forms():
    sources = {row[0] for row in table_rows()}
    assert {"hrm_lm install", "hrm_lm trainer", "hrm_lm data", "hrm_lm generate", "HRM pretrain", "HRM dataset",
            "gated fork", "step/epoch guide"} <= sources
    assert len(table_rows()) >= 30


@pytest.mark.timeout(120)
@pytest.mark.parametrize("source, theirs, ours", table_rows(), ids=lambda v: v[:48] if isinstance(v, str) else v)
def test_each_row_runs(in_workspace: Path, source: str, theirs: str, ours: str, capsys):
    if ours.startswith("pip install"):
        scripts = {ep.name for ep in metadata.entry_points(group="console_scripts")}
        assert "hrm-ray" in scripts
        return
    argv = shlex.split(ours)
    assert argv[0] == "hrm-ray"
    argv = argv[1:]
    code = cli_main([*argv, *size_flags(argv)])
    captured = capsys.readouterr()
    assert code == 0, f"{ours}: {captured.err}"


def test_a_run_records_its_code_version_and_still_loads(in_workspace: Path):
    config = in_workspace / "runs" / "arithmetic-demo" / "config.yaml"
    recorded = yaml.safe_load(config.read_text())["code_version"]
    assert recorded["package"] == "hrm-ray" and recorded["version"] != "unknown"
    assert len(recorded["git_commit"]) == 40 and isinstance(recorded["git_dirty"], bool)
    assert load_yaml(config).model.d_model == 32  # metadata, not a config key


def test_seed_and_fork_forms_map_onto_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", "--dry_run", "model.d_model=32", "model.n_heads=2"]) == 0  # an override, no value
    assert "d_model" not in capsys.readouterr().err
    cfg = build_config(None, ["project_name=P", "checkpoint_path=ck/proj/run1", "checkpoint_every_eval=true",
                              "--dataset_workers", "0"])
    assert (cfg.train.wandb_project, cfg.ray.storage_path, cfg.train.run_name) == ("P", "ck/proj", "run1")
    assert cfg.data.dataset_workers == 0
    notes = capsys.readouterr().err
    assert re.search(r"note: checkpoint_path=DIR is the run's directory", notes)
    assert "note: checkpoint_every_eval" in notes
    (tmp_path / "gated.yaml").write_text("defaults:\n  - hrm_v1_gated\nhidden_size: 64\nH_layers: 2\n")
    cfg = build_config(None, ["arch=gated.yaml", "arch.H_cycles=3"])
    assert (cfg.model.name, cfg.model.use_gating, cfg.model.d_model, cfg.model.h_layers, cfg.model.h_cycles) == (
        "hrm_v1_gated", True, 64, 2, 3)
    (tmp_path / "run.yaml").write_text("defaults: [gated]\nlr: 3e-4\ntrain:\n  steps: 5\n")
    (tmp_path / "gated.yaml").rename(tmp_path / "gated_arch.yaml")
    with pytest.raises(Exception, match="no model, preset or YAML file"):
        build_config(str(tmp_path / "run.yaml"), [])
    (tmp_path / "run.yaml").write_text("defaults: [gated_arch, base.yaml]\nlr: 3e-4\ntrain:\n  steps: 5\n")
    (tmp_path / "base.yaml").write_text("train:\n  batch_size: 7\n")
    cfg = build_config(str(tmp_path / "run.yaml"), [])
    assert (cfg.model.d_model, cfg.optim.learning_rate, cfg.train.steps, cfg.train.batch_size) == (64, 3e-4, 5, 7)
    (tmp_path / "base.yaml").write_text("defaults: [hrm_v1]\ntrain:\n  batch_size: 7\n")
    with pytest.raises(Exception, match="one level deep"):
        build_config(str(tmp_path / "run.yaml"), [])
