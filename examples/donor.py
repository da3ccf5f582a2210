"""The donor of the msharefs example: create /shareme, write into it, and wait.

Run a broker (`make run`), then `python examples/donor.py` in one terminal and
`python examples/consumer.py` in another. Press Enter (or send SIGTERM) to
end the donor; it unlinks /shareme on the way out.
"""

from __future__ import annotations

import signal
import sys

import mshare

TEXT = b"Some random shared text"


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with mshare.connect() as ns:
        align = ns.info().alignment
        region = ns.create("/shareme", size=2 * align, mode=0o600)
        try:
            region.buf[: len(TEXT)] = TEXT
            print(f"INFO: {region.size} bytes shared at addr {region.start:#x}", flush=True)
            print("donor: waiting; press Enter to finish", flush=True)
            sys.stdin.readline()
        finally:
            region.close()
            ns.unlink("/shareme")
    return 0


if __name__ == "__main__":
    sys.exit(main())
