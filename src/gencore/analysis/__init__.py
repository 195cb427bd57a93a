"""Analysis: reading cores offline (reader, heap census)."""
