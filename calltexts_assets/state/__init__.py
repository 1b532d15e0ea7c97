"""What survives a run: the ledger of calls and their steps, the OAuth token pair, limits shared
through the ledger database, the keys and formats of stored files, and the work folder."""
