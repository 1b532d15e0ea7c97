"""HTTP trigger API of the export: `create_app` for tests and embedding, `serve` for the CLI."""

from calltexts_assets.api.app import create_app
from calltexts_assets.api.server import build_app, serve

__all__ = ["build_app", "create_app", "serve"]
