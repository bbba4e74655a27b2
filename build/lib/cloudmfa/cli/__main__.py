"""``python -m cloudmfa.cli``: the same as the ``cloudmfa`` console script."""

from cloudmfa.cli import main

main()
