"""Telegram's door and what only it needs: polling, update parsing, dedupe, the chat store,
the rate-limited outbox and evidence hashing.
"""
