"""medfocal.data."""
