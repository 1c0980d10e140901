"""``medfocal plan``: a training config from a dataset fingerprint (nnU-Net's planning, as a plain YAML).

Example::

    medfocal plan ../shared/data/drive/training -o plan.yaml      # layout and field-of-view detected
    medfocal fit --config plan.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medfocal.cli._options import add_signature_options, new_parser

__all__ = ["HELP", "main", "parser"]

HELP = "Fingerprint a dataset and write a training config (plan.yaml) for `medfocal fit`."


def parser() -> argparse.ArgumentParser:
    """The ``medfocal plan`` parser: the parameters of :func:`medfocal.data.planning.plan_dataset`."""
    from medfocal.data.plan_rules import NETWORKS
    from medfocal.data.planning import plan_dataset
    from medfocal.presets import list_presets

    p = new_parser(
        "plan",
        "Reads the dataset (spacings, shapes, intensities inside the foreground, class fractions, lesion "
        "sizes), then chooses spacing, patch and batch size for the budget, the network topology, "
        "normalisation, sampling, loss and augmentation; every choice carries its reason as a comment in "
        "the YAML. The fingerprint is saved beside it (<out>.fingerprint.json).",
        f"presets for --preset (their loss is kept): {', '.join(list_presets())}\n"
        "next: medfocal fit --config plan.yaml\n"
        "baseline at the same data and time (MONAI UNet + DiceCELoss): "
        "medfocal fit --config plan.yaml --config baselines/unet_dicece\n"
        "exit status: 0 written, 2 undetectable or ambiguous layout (the message says which option to add).",
    )
    p.add_argument("data", help="dataset folder (layout detected), dataset.json, .csv or MedMNIST .npz")
    add_signature_options(
        p,
        plan_dataset,
        skip=("data", "show"),
        flags={"out": ("-o", "--out")},
        overrides={
            "budget": {"type": str, "help": "cpu (30 min), gpu (120 min) or minutes of training"},
            "network": {
                "choices": NETWORKS,
                "help": "segmentation network: auto (MONAI's residual UNet on a CPU budget, nnU-Net's "
                "DynUNet on a GPU), unet or dynunet",
            },
        },
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``medfocal plan``: exit 0 when the plan is written, 2 on a data or argument problem."""
    args = vars(parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    from medfocal.data.planning import plan_dataset

    try:
        out = plan_dataset(**args)
    except (FileNotFoundError, ValueError) as err:
        print(f"medfocal plan: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (fingerprint: {out.with_name(out.stem + '.fingerprint.json')})")
    print(f"next: medfocal fit --config {out}")
    return 0
