-- The ledger's own database beside the Dagster instance's (CALLTEXTS_DATABASE_URL).
CREATE DATABASE calltexts OWNER calltexts;
