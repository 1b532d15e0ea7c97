"""The cost report: its figures, the STT section, Markdown and PDF."""
