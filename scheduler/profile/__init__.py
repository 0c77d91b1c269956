"""Profiles: the schema, where they are found, trtexec import, synthetic profiles."""
