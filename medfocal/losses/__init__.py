"""medfocal.losses."""
