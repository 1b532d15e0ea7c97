"""What a file is called and where it lives: storage keys of every deliverable, a recording's
format read from its bytes, and the local work folder."""
