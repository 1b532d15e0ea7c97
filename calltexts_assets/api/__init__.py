"""HTTP trigger API of the export: `api.app.create_app` for tests and embedding,
`api.server.serve` for the CLI. Nothing is imported here: `calltexts run` uses
`api.estimate` and must not load FastAPI, uvicorn or boto3 with it (issue #26)."""
