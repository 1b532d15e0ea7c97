"""Hand-written protocol clients: Bitrix24 REST, storage (local, S3), OpenAI."""
