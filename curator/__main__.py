"""``python -m curator`` == ``curator``."""

from curator.cli import main

main()
