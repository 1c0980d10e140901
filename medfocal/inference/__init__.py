"""medfocal.inference: batch prediction from a checkpoint (``medfocal infer``) and evaluation.

Example::

    from medfocal.inference import Predictor, evaluate_folders
    Predictor.from_checkpoint("best.ckpt").predict_folder("imagesTs", "predictions")
    print(evaluate_folders("predictions", "labelsTs").summary_text)
"""

from __future__ import annotations

from medfocal.card import ModelCard
from medfocal.inference.cases import Case, discover_cases
from medfocal.inference.checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint
from medfocal.inference.evaluate import EvaluationResult, evaluate_case, evaluate_folders
from medfocal.inference.heads import Prediction, PredictionHead
from medfocal.inference.predictor import InferenceResult, Predictor, select_device
from medfocal.inference.report import case_statistics, voxel_volume_ml

__all__ = [
    "Case",
    "CheckpointInfo",
    "EvaluationResult",
    "InferenceResult",
    "ModelCard",
    "Prediction",
    "PredictionHead",
    "Predictor",
    "case_statistics",
    "discover_cases",
    "evaluate_case",
    "evaluate_folders",
    "load_checkpoint",
    "read_checkpoint",
    "select_device",
    "voxel_volume_ml",
]
