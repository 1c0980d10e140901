"""Tests for medfocal.tasks.registry: the task kinds, and that a new kind needs no predictor change."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import medfocal.inference
from medfocal.card import ModelCard
from medfocal.inference.heads import PredictionHead
from medfocal.tasks import registry
from medfocal.tasks.registry import TaskKind, get_task, register_task, task_names


@pytest.mark.parametrize("name", task_names())
def test_every_registered_kind_has_its_module_and_head(name):
    kind = get_task(name)
    assert kind.module_class().task == name
    assert issubclass(kind.head_class(), PredictionHead)


def test_unknown_and_duplicate_kinds_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown task 'clasification'.*did you mean 'classification'\?"):
        get_task("clasification")
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    other = TaskKind("segmentation", "a.B", "c.D")
    with pytest.raises(ValueError, match="task 'segmentation' is already registered"):
        register_task(other)
    assert register_task(other, replace=True) is other and get_task("segmentation") is other
    with pytest.raises(ValueError, match=r"task 'segmentation': head 'c\.D' does not import"):
        other.head_class()


def test_a_new_task_kind_is_files_plus_one_registration(monkeypatch, tmp_path):
    """A kind registered from outside runs through the unchanged predictor: its head decides outputs."""
    from PIL import Image

    from medfocal.inference import Predictor

    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    register_task(
        TaskKind("intensity", "tasks_standins.BlobSegmentationData", "tasks_standins.MeanIntensityHead")
    )
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)
    card = ModelCard(
        task="intensity",
        model={
            "class_path": "torch.nn.Conv2d",
            "init_args": {"in_channels": 1, "out_channels": 2, "kernel_size": 1},
        },
        class_names=["a", "b"],
        num_classes=2,
        in_channels=1,
        spatial_dims=2,
        preprocessing={"modality": "grey", "spatial_dims": 2},
        temperature=2.0,
    )
    inp = tmp_path / "in"
    inp.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (12, 10), dtype=np.uint8)
    Image.fromarray(pixels).save(inp / "x.png")
    result = Predictor(net, card, device="cpu").predict_folder(inp, tmp_path / "out", progress=False)
    assert result.ok, result.failures
    with torch.no_grad():
        expected = net(torch.as_tensor(pixels / 255.0, dtype=torch.float32)[None, None]).mean((2, 3))[0] / 2.0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "x.npy"), expected.numpy(), rtol=1e-5)
    assert result.report_path.name == "means.csv"
    assert result.rows[0]["mean_0"] == pytest.approx(float(expected[0]), abs=1e-6)
    again = Predictor(net, card, device="cpu").predict_folder(inp, tmp_path / "out", progress=False)
    assert again.counts["skipped"] == 1  # its files exist: resumed


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_inference_does_not_branch_on_task_kinds():
    """No ``task == ...`` and no task-kind name in the code of medfocal.inference (only in the registry)."""
    root = Path(medfocal.inference.__file__).parent
    for path in sorted(root.rglob("*.py")):
        names = [(line, s) for line, s in _code_strings(path) if s in task_names()]
        assert not names, f"{path}: task kinds named in code at {names}"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
                assert node.left.attr != "task", f"{path}:{node.lineno}: compares .task"
