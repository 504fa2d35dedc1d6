"""What both processes share: the bot (which holds no private key) may import only this and
`backend.flows`. Nothing here imports the rest of `backend` (tests/test_layout.py checks it).
"""
