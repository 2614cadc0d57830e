"""Logging: one JSON object per line (or plain text for a terminal), level from config.

The access log is one line per request with the request id, route, status, latency and,
for generation calls, the key id (never the key), user id, model, backend and images
charged. Nothing secret is ever put in a log record by the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from typing import Any

import orjson

from gateway.config import LoggingConfig

__all__ = ["AccessLog", "JsonFormatter", "configure_logging"]

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _utc_time(created: float) -> str:
    """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``, faster.

    Rounded to the microsecond, then cut to the millisecond, as that expression does.
    """
    second = int(created)
    micros = round((created - second) * 1e6)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    return f"{_utc_second(second)}.{micros // 1000:03d}+00:00"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    """The fields passed with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            _extra(record),
            exception,
        )

    def line(
        self,
        created: float,
        level: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exception: str | None = None,
    ) -> str:
        """The line for a record made at ``created`` with these ``extra`` fields."""
        entry: dict[str, Any] = {
            "time": _utc_time(created),
            "level": level.lower(),
            "logger": name,
            "message": message,
            **fields,
        }
        if exception:
            entry["exception"] = exception
        return orjson.dumps(entry, default=str).decode()


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) + self._pairs(_extra(record))

    def line(
        self, created: float, level: str, name: str, message: str, fields: dict[str, Any]
    ) -> str:
        """What :meth:`format` makes of a record without exception or stack."""
        # %(asctime)s as logging.Formatter.formatTime writes it by default.
        asctime = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
        msecs = int((created - int(created)) * 1000)
        return f"{asctime},{msecs:03d} {level} {name}: {message}" + self._pairs(fields)

    @staticmethod
    def _pairs(fields: dict[str, Any]) -> str:
        return "".join(f" {k}={v}" for k, v in fields.items())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs, with one of the formatters above."""

    formatter: JsonFormatter | _TextFormatter


def configure_logging(config: LoggingConfig, *, force_text: bool = False) -> None:
    handler = _Handler(sys.stderr)
    if config.format == "json" and not force_text:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    logging.getLogger("gateway.access").disabled = not config.access_log


class AccessLog:
    """The access log: one INFO line per request, on the ``gateway.access`` logger.

    Lines are written in batches, as busy gateways do (Envoy flushes its access logs
    every second, nginx has ``buffer=``/``flush=``): a batch goes out ``flush_seconds``
    after its first line, or at once when it holds ``max_pending`` lines, and
    :meth:`flush` writes what is left when the server stops. So a line may appear up to
    ``flush_seconds`` late, and a process killed with SIGKILL loses at most that much
    of its access log (never any usage: that is counted elsewhere). With
    ``flush_seconds`` 0 the lines of one event-loop turn are written together at its end.

    A ``LogRecord`` costs more than the rest of the line: the caller's frame is looked
    up, some twenty attributes are set, the logger tree is walked. So when the lines
    would reach only the handler :func:`configure_logging` installed (the usual case),
    each line is formatted and written here, exactly as that handler would write it.
    Otherwise (another logging setup, tests capturing records) it is logged at once as
    usual.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        flush_seconds: float = 0.0,
        max_pending: int = 256,
    ) -> None:
        self._logger = logger or logging.getLogger("gateway.access")
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        #: (time, message, fields) of the lines not written yet, and their handler.
        self._pending: list[tuple[float, str, dict[str, Any]]] = []
        self._handler: _Handler | None = None
        self._timer: asyncio.Handle | None = None

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, message: str, fields: dict[str, Any]) -> None:
        """Log ``message`` with ``fields`` as ``extra``; call only when :meth:`enabled`."""
        pending = self._pending
        if not pending:  # a new batch: where do its lines go?
            self._handler = self._only_handler()
        handler = self._handler
        if handler is None:
            self._logger.info("%s", message, extra=fields)
            return
        pending.append((time.time(), message, fields))
        if len(pending) >= self._max_pending:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: write it now
                self.flush()
                return
            if self._flush_seconds > 0:
                self._timer = loop.call_later(self._flush_seconds, self.flush)
            else:  # after this turn's callbacks, before the next turn's
                self._timer = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        handler, pending = self._handler, self._pending
        if handler is None or not pending:
            return
        self._pending = []
        line, name, terminator = handler.formatter.line, self._logger.name, handler.terminator
        text = "".join([line(t, "INFO", name, m, f) + terminator for t, m, f in pending])
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # as StreamHandler.emit does: report it, carry on
            handler.handleError(logging.makeLogRecord({"msg": pending[0][1]}))
        finally:
            handler.release()

    def _only_handler(self) -> _Handler | None:
        """The one handler an INFO record would reach, if it is ours and filters nothing."""
        logger: logging.Logger | None = self._logger
        if self._logger.filters:
            return None
        found = None
        while logger is not None:
            for handler in logger.handlers:
                if found is not None or type(handler) is not _Handler:
                    return None
                found = handler
            logger = logger.parent if logger.propagate else None
        if found is None or found.filters or found.level > logging.INFO:
            return None
        return found
