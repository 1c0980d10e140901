"""medfocal: focal-family losses, models and tools for class-imbalanced medical imaging."""

from __future__ import annotations

import logging

# MONAI's PydicomReader (present when pydicom is installed) warns on every LoadImage that the optional
# NVIDIA nvImageCodec GPU decoder is missing; pydicom's own decoders are used, so this is noise
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

__version__ = "0.1.0"

__all__ = ["__version__"]
