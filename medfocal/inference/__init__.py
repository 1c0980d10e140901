"""medfocal.inference."""
