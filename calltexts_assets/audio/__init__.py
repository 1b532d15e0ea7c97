"""Recordings: download once, read headers, decode, cut into chunks."""
