"""The task presets of ``configs/``: read from the clone medfocal runs from, else from the package.

A clone (``pip install -e .``) has ``<repo>/configs``; a wheel carries the same files as the package
``medfocal.configs`` (see ``package-dir`` in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_config", "list_presets"]

_REPO = Path(__file__).resolve().parents[1]


def find_config(name: str = "demo.yaml") -> Path:
    """The preset ``configs/<name>``: from the source tree medfocal runs from, else the installed copy.

    ``name`` may name a sub-folder, e.g. ``"common/amp.yaml"``.

    Raises:
        FileNotFoundError: when no preset of that name exists (the message lists the presets).
    """
    candidates = [_REPO / "configs" / name]
    installed = _installed_configs()
    if installed is not None:
        candidates.append(installed / name)
    for path in candidates:
        if path.is_file():
            return path
    roots = [path.parent for path in candidates]
    presets = sorted({q.name for root in roots if root.is_dir() for q in root.glob("*.yaml")})
    raise FileNotFoundError(
        f"{name}: preset not found in {', '.join(str(r) for r in roots)}; "
        f"presets: {', '.join(presets) or 'none'} (or pass --config FILE)"
    )


def list_presets() -> list[str]:
    """Names of the task presets (``configs/*.yaml`` without the suffix), for ``--config NAME``."""
    roots = [_REPO / "configs", _installed_configs()]
    return sorted(
        {q.stem for root in roots if root is not None and root.is_dir() for q in root.glob("*.yaml")}
    )


def _installed_configs() -> Path | None:
    """The folder of the ``medfocal.configs`` package (the presets shipped in the wheel), if any."""
    from importlib.util import find_spec

    try:
        spec = find_spec("medfocal.configs")
    except ModuleNotFoundError:
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None
