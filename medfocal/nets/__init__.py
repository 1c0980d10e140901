"""medfocal.nets."""
