"""Typed, validated descriptions of what the user asked for. No I/O here."""
