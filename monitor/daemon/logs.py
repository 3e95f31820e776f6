"""How the daemon logs: readable text for a terminal, or one JSON object per line for log shippers.

``configure_logging`` is called once by ``seqmon run``. A record may carry structured fields in ``extra={"fields":
{...}}`` (a closed window's figures, say): the JSON format puts them in the object, the text format leaves them out
(its message already says what matters).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from monitor.export.metrics import json_safe

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601 UTC, ms), ``level``, ``logger``, ``message``, the record's
    ``fields`` if any, and ``exception`` (the formatted traceback) when one is attached. Never raises on odd values."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in json_safe(fields).items() if k not in doc})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send every logger's records to stderr at ``level``, as text or JSON lines (replaces earlier handlers)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
