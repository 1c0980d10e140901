"""medfocal: focal-family losses, models and tools for class-imbalanced medical imaging."""

from __future__ import annotations

import logging
import warnings

# third-party notices a medfocal user cannot act on (each a precise message, nothing broader): MONAI's
# pydicom reader without NVIDIA's GPU decoder, a MONAI-internal deprecated argument, a Lightning-internal
# deprecation; they repeat on every case / validation and bury the output of `medfocal demo` and `infer`
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

# MONAI's PydicomReader (present when pydicom is installed) warns on every LoadImage that the optional
# NVIDIA nvImageCodec GPU decoder is missing; pydicom's own decoders are used, so this is noise
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

__version__ = "0.1.0"

__all__ = ["__version__"]
