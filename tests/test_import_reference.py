"""`hrm-ray import`: checkpoints of the reference trainers (sapientinc/HRM, TinyRecursiveModels), built here at
tiny size from their parameter names and shapes, become hrm-ray model directories that `hrm-ray eval` scores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from hrm_ray.cli import main
from hrm_ray.config import load_yaml
from hrm_ray.infer.reference_import import import_reference
from hrm_ray.train.puzzle_task import build_puzzle_model
from tests.test_checkpoint_safety import RunsACommand, tiny_sudoku
from tests.test_faults_train import error_lines

D, HEADS, EXPANSION, VOCAB, SEQ = 16, 2, 4, 11, 81   # the Sudoku dataset's vocabulary and length
pytestmark = pytest.mark.usefixtures("one_thread")


HRM_ARCH = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
TRM_ARCH = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"


@pytest.fixture(scope="module")
def sudoku(real_data: Path, tmp_path_factory) -> Path:
    return tiny_sudoku(real_data, tmp_path_factory.mktemp("sudoku"))


def width(dim: int) -> int:
    """The reference SwiGLU's hidden width: 2/3 of expansion x dim, rounded up to a multiple of 256."""
    return -(round(EXPANSION * dim * 2 / 3) // -256) * 256


def block_shapes(prefix: str, mlp_t_positions: int = 0) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.mlp.gate_up_proj.weight": (2 * width(D), D), f"{prefix}.mlp.down_proj.weight": (D, width(D))}
    if mlp_t_positions:
        p = mlp_t_positions
        shapes |= {f"{prefix}.mlp_t.gate_up_proj.weight": (2 * width(p), p), f"{prefix}.mlp_t.down_proj.weight": (p, width(p))}
    else:
        shapes |= {f"{prefix}.self_attn.qkv_proj.weight": (3 * D, D), f"{prefix}.self_attn.o_proj.weight": (D, D)}
    return shapes


def reference_shapes(arch: dict, prefix_len: int) -> dict[str, tuple[int, ...]]:
    """name -> shape of a reference loss head's state_dict (`model.inner...`) for `arch`."""
    shapes = {"inner.embed_tokens.embedding_weight": (VOCAB, D), "inner.lm_head.weight": (VOCAB, D),
              "inner.q_head.weight": (2, D), "inner.q_head.bias": (2,), "inner.H_init": (D,), "inner.L_init": (D,),
              "inner.puzzle_emb.weights": (1, arch["puzzle_emb_ndim"])}
    if arch["pos_encodings"] == "learned":
        shapes["inner.embed_pos.embedding_weight"] = (SEQ + prefix_len, D)
    levels = [("L_level", arch["L_layers"])] if arch["name"] == TRM_ARCH else [("H_level", arch["H_layers"]),
                                                                              ("L_level", arch["L_layers"])]
    for level, layers in levels:
        for i in range(layers):
            shapes |= block_shapes(f"inner.{level}.layers.{i}", (SEQ + prefix_len) if arch.get("mlp_t") else 0)
    return {f"model.{name}": shape for name, shape in shapes.items()}


def hrm_arch(**overrides) -> dict:
    return {"name": HRM_ARCH, "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
            "halt_exploration_prob": 0.1, "halt_max_steps": 2, "H_cycles": 1, "L_cycles": 2, "H_layers": 1,
            "L_layers": 2, "hidden_size": D, "num_heads": HEADS, "expansion": EXPANSION, "puzzle_emb_ndim": D,
            "pos_encodings": "rope", **overrides}


def trm_arch(**overrides) -> dict:
    return {**hrm_arch(), "name": TRM_ARCH, "H_cycles": 2, "H_layers": 0, "forward_dtype": "bfloat16",
            "mlp_t": False, "puzzle_emb_len": 1, "no_ACT_continue": True, **overrides}


def write_reference(run: Path, arch: dict, prefix_len: int = 1, compiled: bool = True, step: int = 100,
                    extra: dict | None = None, drop: str = "") -> dict[str, torch.Tensor]:
    """A reference run directory: all_config.yaml and a step_N file of random weights (H_init/L_init in bf16,
    as the reference keeps them); returns the weights by their uncompiled names."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "data_path": "data/sudoku-extreme-1k-aug-1000",
                                                        "global_batch_size": 768, "lr": 1e-4}))
    g = torch.Generator().manual_seed(0)
    weights = {name: torch.randn(shape, generator=g) * 0.3 for name, shape in reference_shapes(arch, prefix_len).items()}
    for name in ("model.inner.H_init", "model.inner.L_init"):
        weights[name] = weights[name].to(torch.bfloat16)
    weights = {**{k: v for k, v in weights.items() if k != drop}, **(extra or {})}
    torch.save({("_orig_mod." if compiled else "") + k: v for k, v in weights.items()}, run / f"step_{step}")
    return weights


def block_names(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.attn.qkv.weight", f"{theirs}.self_attn.qkv_proj.weight"),
            (f"{ours}.attn.out.weight", f"{theirs}.self_attn.o_proj.weight"),
            (f"{ours}.mlp.gate_up.weight", f"{theirs}.mlp.gate_up_proj.weight"),
            (f"{ours}.mlp.down.weight", f"{theirs}.mlp.down_proj.weight")]


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs.float())


@pytest.mark.timeout(120)
def test_an_hrm_checkpoint_imports_and_eval_scores_it(sudoku, tmp_path, capsys):
    source = write_reference(tmp_path / "hrm_run", hrm_arch())
    out = tmp_path / "imported"
    assert main(["import", str(tmp_path / "hrm_run"), "--out", str(out)]) == 0
    assert "note: seq_len is left to the dataset" in capsys.readouterr().out
    weights = load_file(out / "model.safetensors")
    pairs = [("model.inner.embed_tokens.weight", "model.inner.embed_tokens.embedding_weight"),
             *[(f"model.inner.{n}", f"model.inner.{n}") for n in ("lm_head.weight", "q_head.weight", "q_head.bias",
                                                                   "H_init", "L_init", "puzzle_emb.weights")]]
    for level, layers in (("H_level", 1), ("L_level", 2)):
        for i in range(layers):
            pairs += block_names(f"model.inner.{level}.layers.{i}", f"model.inner.{level}.layers.{i}")
    assert len(pairs) == len(weights) == len(source)
    for ours, theirs in pairs:
        assert_same(weights[ours], source[theirs])
    cfg = load_yaml(out / "config.yaml")
    model = cfg.model
    assert (model.name, model.h_cycles, model.l_cycles, model.h_layers, model.l_layers, model.d_model, model.n_heads,
            model.vocab_size, model.halt_max_steps) == ("hrm_act_v1", 1, 2, 1, 2, D, HEADS, VOCAB, 2)

    assert main(["eval", "--checkpoint", str(out), "--dataset", str(sudoku), "--batch_size", "2"]) == 0
    assert "exact accuracy" in capsys.readouterr().out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mixer", ["mlp_t", "attention_learned"])
def test_a_trm_checkpoint_imports_and_eval_scores_it(sudoku, tmp_path, capsys, mixer):
    arch = (trm_arch(mlp_t=True, pos_encodings="none") if mixer == "mlp_t"
            else trm_arch(pos_encodings="learned", no_ACT_continue=False))
    source = write_reference(tmp_path / "trm_run", arch, compiled=False)
    out = tmp_path / "imported"
    assert main(["import", str(tmp_path / "trm_run" / "step_100"), "--out", str(out), "--dataset", str(sudoku)]) == 0
    weights = load_file(out / "model.safetensors")
    assert_same(weights["model.inner.y_init"], source["model.inner.H_init"])
    assert_same(weights["model.inner.z_init"], source["model.inner.L_init"])
    for name in ("model.inner.q_head.weight", "model.inner.q_head.bias"):   # (halt, continue) logits
        assert_same(weights[name], source[name])
    theirs, ours = "model.inner.L_level.layers.1", "model.inner.net.layers.1"
    if mixer == "mlp_t":
        assert_same(weights[f"{ours}.token_mlp.gate_up.weight"], source[f"{theirs}.mlp_t.gate_up_proj.weight"])
        assert_same(weights[f"{ours}.token_mlp.down.weight"], source[f"{theirs}.mlp_t.down_proj.weight"])
    else:
        assert_same(weights["model.inner.embed_pos"], source["model.inner.embed_pos.embedding_weight"])
        for mine, reference in block_names(ours, theirs):
            assert_same(weights[mine], source[reference])
    assert len(weights) == len(source)
    cfg = load_yaml(out / "config.yaml")
    assert (cfg.model.name, cfg.model.seq_len, cfg.data.dataset) == ("trm", SEQ, str(sudoku))
    assert (cfg.model.token_mixer, cfg.model.no_act_continue) == (("mlp", True) if mixer == "mlp_t" else ("attention", False))

    assert main(["eval", "--checkpoint", str(out), "--batch_size", "2"]) == 0
    assert "exact accuracy" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_the_trms_sixteen_prefix_positions(tmp_path):
    """The TRM's puzzle embedding takes puzzle_emb_len positions (16 in its configs), not ceil(ndim / d)."""
    write_reference(tmp_path / "trm_run", trm_arch(puzzle_emb_len=16, pos_encodings="learned"), prefix_len=16)
    assert main(["import", str(tmp_path / "trm_run"), "--out", str(tmp_path / "out")]) == 0
    model = load_yaml(tmp_path / "out" / "config.yaml").model
    assert (model.puzzle_emb_len, model.seq_len, model.no_act_continue) == (16, SEQ, True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, expected", [
    ("unknown", "parameter 'model.inner.extra_head.weight' has no counterpart in hrm-ray's hrm_act_v1"),
    ("missing", "no parameter 'model.inner.lm_head.weight'"),
    ("arch_key", "arch.use_bias: a setting hrm-ray's hrm_act_v1 has no counterpart for"),
    ("shape", "'model.inner.q_head.weight' has shape (3, 16)"),
    ("code", "refused: it contains code"),
])
def test_a_foreign_checkpoint_is_one_line(tmp_path, capsys, case, expected):
    marker = tmp_path / "ran"
    arch = hrm_arch(use_bias=True) if case == "arch_key" else hrm_arch()
    extra = {"unknown": {"model.inner.extra_head.weight": torch.zeros(2, D)},
             "shape": {"model.inner.q_head.weight": torch.zeros(3, D)},
             "code": {"model.inner.extra": RunsACommand(marker)}}.get(case)
    write_reference(tmp_path / "run", arch, extra=extra, drop="model.inner.lm_head.weight" if case == "missing" else "")
    assert main(["import", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and expected in lines[0], lines
    assert not marker.exists() and not [p for p in tmp_path.iterdir() if "out" in p.name]  # nothing half-written


REFERENCE = Path(__file__).resolve().parent / "reference"   # weights and outputs of the papers' code


def recorded(family: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    parts = []
    for part in ("weights", "outputs"):
        with safe_open(REFERENCE / f"{family}_{part}.safetensors", "pt") as f:
            parts.append({k: f.get_tensor(k) for k in f.keys()})
            config = json.loads(f.metadata()["config"])
    return parts[0], parts[1], config


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family, arch_name", [("hrm_v1", HRM_ARCH), ("trm_mlp", TRM_ARCH), ("trm_att", TRM_ARCH)])
def test_an_imported_model_computes_what_the_papers_code_computed(tmp_path, family, arch_name):
    """The weights recorded with the reference implementation (tests/reference/README.md), saved as its trainer
    saves them, imported: our evaluation steps give the reference's logits and halting logits."""
    weights, ref, config = recorded(family)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({f"_orig_mod.model.{k}": v for k, v in weights.items()}, run / "step_7")
    arch = {"name": arch_name, "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}, **config}
    (run / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch}))
    out = import_reference(run, tmp_path / "out").directory
    head = build_puzzle_model(load_yaml(out / "config.yaml").model)
    head.load_state_dict(load_file(out / "model.safetensors"))
    data = {k: ref[f"batch/0/{k}"] for k in ("inputs", "labels", "puzzle_identifiers")}
    with torch.no_grad():
        carry = head.eval().initial_carry(data)
        for s in range(config["halt_max_steps"]):
            carry, _, _, _, outputs = head(carry, data, return_outputs=True)
            for key in ("logits", "q_halt_logits"):
                want = ref[f"eval/{s}/{key}"]
                assert (outputs[key] - want).abs().max() <= 1e-5 * want.abs().max(), (s, key)
