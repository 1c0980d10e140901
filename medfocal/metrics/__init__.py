"""medfocal.metrics."""
