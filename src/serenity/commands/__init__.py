"""Subcommands in their own modules: each exposes ``register(subparsers)``.

``serenity.cli`` imports every module here and calls its ``register``; a module adds its parser
with ``set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code.
"""
