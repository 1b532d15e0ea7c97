"""The Dagster layer beside assets/: jobs, schedules, sensors, run summaries."""
