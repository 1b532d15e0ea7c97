"""The OpenAI-compatible STT emulator: what it hears in the audio and how each server answers."""
