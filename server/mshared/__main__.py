"""mshared's entry point: config, logging, run, exit codes (0 stopped, 1 failed, 2 bad config)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Sequence

from .config import ConfigError, load
from .daemon import AlreadyRunning, Daemon, UnsafeRunDir


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback of internal errors)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class DeferredQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread unformatted: the session loop pays for a queue put, not for I/O."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def setup_logging(level: str, fmt: str) -> logging.handlers.QueueListener:
    """Log lines go to stderr from a thread of their own; returns it for stopping at exit."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    logging.basicConfig(level=level.upper(), handlers=[DeferredQueueHandler(records)], force=True)
    listener.start()
    return listener


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"mshared: {exc}", file=sys.stderr)
        return 2
    listener = setup_logging(config.log_level, config.log_format)
    try:
        Daemon(config).run()
    except (AlreadyRunning, UnsafeRunDir) as exc:
        logging.getLogger("mshared").error("%s", exc)
        return 1
    except OSError as exc:
        logging.getLogger("mshared").error("cannot start: %s", exc)
        return 1
    except Exception:
        logging.getLogger("mshared").exception("internal error")
        return 1
    finally:
        listener.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
