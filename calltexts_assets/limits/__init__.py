"""Staying within what the services and the machine allow: pacing, bounded concurrency, retry
policies and whether a recorded process still runs."""
