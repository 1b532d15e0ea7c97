"""The Bitrix24 portal emulator: state, REST methods, limits, OAuth, recordings and faults."""
