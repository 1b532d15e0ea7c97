"""The sandbox: emulators of the Bitrix24 portal and of an OpenAI-compatible STT server.

Served on loopback with seeded synthetic calls: the embedded default for a newcomer and the
ground of the tests and benchmarks. The product reaches it only through `runtime` (the CLI's
sandbox commands and `calltexts dev`)."""
