"""Synthetic calls that carry their own transcript: scripts, tones, MP3 frames, the seed."""
