"""Log records as one JSON object a line (`HOTLINE_LOG_FORMAT=json`), for a log collector.

The same records as the text format and so the same redaction: what a record may carry is
decided where it is logged (case ids and events, never platform ids, names or text) and by the
libraries kept quiet in `bot/cli/__init__.py`. This only changes the framing, so a message with
a line break or a quote cannot forge a second record or a field.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)
