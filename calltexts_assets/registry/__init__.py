"""The registry of calls: its rows, schema, CSV codes and the typed xlsx for spreadsheets."""
