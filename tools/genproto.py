"""Generate the protobuf and gRPC modules of mshare.v1 from proto/ into OUT/mshare/v1."""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
INIT = '"""Generated from proto/mshare/v1 by `make proto`; never edit by hand."""\n'


def generate(out: Path) -> None:
    """Write the generated package under out/mshare/v1."""
    package = out / "mshare" / "v1"
    package.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "mshare" / "v1").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (package / "__init__.py").write_text(INIT)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "client")
