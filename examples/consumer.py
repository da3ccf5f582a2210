"""The consumer of the msharefs example: open /shareme and print where it is and what it says."""

from __future__ import annotations

import sys

import mshare


def main() -> int:
    with mshare.connect() as ns, ns.open("/shareme", readonly=True) as region:
        print(f"INFO: {region.size} bytes shared at addr {region.start:#x}")
        text = bytes(region.buf[:4096]).split(b"\0", 1)[0]
        print(text.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
