"""hotline's centre (storage, intake, console, keyring) around the shared `core` and `flows`.

`backend` never imports `bot`; the CLI in `bot.cli` is the one place that wires both.
"""
