"""hotline's centre and shared core: flow language, sealing and keys, streams, storage, console.

`backend` never imports `bot`; the CLI in `bot.cli` is the one place that wires both.
"""
