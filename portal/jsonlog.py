"""One JSON object per log line, so a key name with a newline or an ANSI escape cannot forge a
second record or repaint a terminal (threat 14 in docs/security.md)."""

import json
import logging
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Extra fields passed with logger.info(..., extra={...}); request objects are skipped.
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request":
                entry[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ensure_ascii escapes every control and bidi character, so each record stays one line.
        return json.dumps(entry, ensure_ascii=True)
