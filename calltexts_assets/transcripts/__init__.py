"""One call's recording -> a dialogue transcript file."""
