"""``python -m hxsched`` runs the CLI."""

from hxsched.cli import console_main

console_main()
