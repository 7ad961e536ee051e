"""Regenerate the gRPC code in rmserve/v1 from protos/ (one command, never edited by hand).

    python scripts/gen_protos.py          # rewrite rmserve/v1/*_pb2*.py{,i}
    python scripts/gen_protos.py --check  # fail if the committed files are stale

Generating from ``-Iprotos`` makes the code import as ``rmserve.v1`` without any rewriting.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("rmserve") / "v1"
GENERATED_GLOB = "*_pb2*.py*"


def generate(out: Path) -> list[Path]:
    """Run protoc for every .proto under protos/ and return the generated files, relative."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # the mypy-protobuf plugins live beside python
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {protos}")
    return sorted(p.relative_to(out) for p in (out / PACKAGE).glob(GENERATED_GLOB))


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p.relative_to(ROOT) for p in (ROOT / PACKAGE).glob(GENERATED_GLOB))
        stale = [
            str(p)
            for p in fresh
            if not (ROOT / p).is_file() or not filecmp.cmp(Path(tmp) / p, ROOT / p, shallow=False)
        ]
        stale += [str(p) for p in committed if p not in fresh]
    if stale:
        print(
            f"generated protobuf code is stale: {', '.join(stale)}; "
            "run `python scripts/gen_protos.py`",
            file=sys.stderr,
        )
        return 1
    print(f"generated protobuf code is up to date ({len(fresh)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if committed files differ")
    if parser.parse_args().check:
        return check()
    for old in (ROOT / PACKAGE).glob(GENERATED_GLOB):
        old.unlink()
    for path in generate(ROOT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
