"""Peer tools the benchmarks compare Serenity with, each run in a virtual environment of its own
(``.venv-peers``) as a subprocess: no peer's code is imported into Serenity's interpreter or
copied into the repository."""
