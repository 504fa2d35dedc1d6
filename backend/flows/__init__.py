"""The flow language: YAML flows and locales, compiled once to shared `transitions` machines."""
