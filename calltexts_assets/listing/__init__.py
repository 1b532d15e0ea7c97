"""The calls of a period as Bitrix24 lists them, normalised and counted."""
