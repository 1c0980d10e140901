"""README.md stays true: its Python snippets run, and its commands exist with the options it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medfocal.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main

REPO = Path(__file__).resolve().parents[1]

README = (REPO / "README.md").read_text()


def _blocks(language: str | None = None) -> list[str]:
    """Fenced code blocks of the README, optionally only those of one language."""
    blocks, current, lang = [], None, ""
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if language is None or lang == language:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _python_blocks() -> list[str]:
    return _blocks("python")


def test_losses_snippet_runs():
    block = next(b for b in _python_blocks() if "DiceFocalLoss" in b and "backward" in b)
    exec(compile(block, "README.md", "exec"), {})


@pytest.mark.slow
def test_python_api_snippet_trains(lesion_dataset, tmp_path, monkeypatch):
    block = next(b for b in _python_blocks() if "SegmentationModule" in b)
    monkeypatch.chdir(tmp_path)
    block = block.replace('"medfocal_demo/data"', repr(str(lesion_dataset)))
    # the README trains for 20 epochs; here one batch is enough to show the code path works
    block = block.replace("max_epochs=20", "fast_dev_run=True, logger=False, enable_progress_bar=False")
    exec(compile(block, "README.md", "exec"), {})


def test_every_documented_command_exists(capsys):
    shell = "\n".join(b for b in _blocks() if "medfocal " in b and "import " not in b)
    documented = set(re.findall(r"^(?:\.venv/bin/)?medfocal ([a-z|-]+)", shell, flags=re.M))
    assert {"fit", "infer", "evaluate", "check-data", "demo"} <= documented
    assert documented <= set(LIGHTNING_COMMANDS) | set(EXTRA_COMMANDS) | {"fit|validate|test|predict"}
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]:
        assert name in out


def test_presets_in_readme_exist():
    for name in re.findall(r"`([a-z_]+\.yaml)`", README):
        assert (REPO / "configs" / name).is_file() or (REPO / "configs" / "common" / name).is_file(), name


def test_makefile_targets_in_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    for target in set(re.findall(r"^make ([a-z-]+)", README, flags=re.M)):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert "make test" in (REPO / ".ci" / "run").read_text()
