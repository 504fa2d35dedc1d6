"""hotline's edge: channel adapters, the conversation runtime, sessions and the report sender."""
