"""hotline's edge: channel adapters, the conversation runtime, sessions, the relay and the report
sender; it imports only `backend.core` and `backend.flows`. The CLI (`bot.cli`) is apart.
"""
