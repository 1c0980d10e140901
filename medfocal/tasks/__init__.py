"""medfocal.tasks."""
