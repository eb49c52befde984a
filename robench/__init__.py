"""The ``robench`` command line, above the three packages it drives.

``benchmark`` (attacks, protocol, runner), ``model_zoo`` (cards, checkpoints, ``load_model``) and
``leaderboard`` (tables, site) do not import this package; it imports them. ``robench.cli`` is the
``robench`` command, ``robench.run`` the entry point torchrun starts (``python -m robench.run``).
"""
