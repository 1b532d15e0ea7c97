"""Recordings: download once, read headers, decode a block at a time, cut into pieces."""
