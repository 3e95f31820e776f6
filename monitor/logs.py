"""How the daemon logs: readable text for a terminal, or one JSON object per line for log shippers.

``configure_logging`` is called once by ``seqmon run``. A record may carry structured fields in ``extra={"fields":
{...}}`` (a closed window's figures, say): the JSON format puts them in the object, the text format leaves them out
(its message already says what matters).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null, numpy scalars as numbers, anything else unknown as its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    item = getattr(value, "item", None)  # numpy scalars
    return _json_safe(item()) if callable(item) else str(value)


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
            doc.update({k: v for k, v in _json_safe(fields).items() if k not in doc})
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
