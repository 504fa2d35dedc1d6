"""The counselor console at `/console`: sign-in, the case list and the case view."""
