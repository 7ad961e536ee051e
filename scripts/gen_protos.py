"""Regenerate the gRPC code in rmserve/v1 from protos/ (one command, never edited by hand).

    python scripts/gen_protos.py          # rewrite rmserve/v1/*_pb2*.py{,i}
    python scripts/gen_protos.py --check  # fail if the committed files are stale

Generating from ``-Iprotos`` makes the code import as ``rmserve.v1`` without any rewriting.
With the locked grpcio-tools and mypy-protobuf (locks/dev-py3.11.txt) regeneration is
byte-identical. ``--check`` compares the files with the generator's version stamps masked
(``GENERATED_STAMPS``), so another patch release of the tools, which writes only another version
number, is not "stale"; any other difference, from the proto or from an edit, is.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("rmserve") / "v1"
GENERATED_GLOB = "*_pb2*.py*"
# The lines in which a generator writes its own version, and nothing from the proto.
GENERATED_STAMPS = (
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(
        r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.\w+,)"
        r"\s*\d+,\s*\d+,\s*\d+,\s*'[^']*',"
    ),
)


def generate(out: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc for every .proto under ``proto_root``; return the generated files, relative."""
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # the mypy-protobuf plugins live beside python
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
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


def without_stamps(text: str) -> str:
    """``text`` with every generator version stamp replaced by a fixed marker."""
    for stamp in GENERATED_STAMPS:
        text = stamp.sub(lambda m: (m.groups() or ("",))[0] + "<version>", text)
    return text


def stale_files(root: Path = ROOT) -> list[str]:
    """Generated files under ``root`` that differ from what ``root/protos`` generates now,
    version stamps aside (missing and left-over files included)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), root / "protos")
        committed = sorted(p.relative_to(root) for p in (root / PACKAGE).glob(GENERATED_GLOB))
        stale = [
            str(p)
            for p in fresh
            if not (root / p).is_file()
            or without_stamps((Path(tmp) / p).read_text()) != without_stamps((root / p).read_text())
        ]
    return stale + [str(p) for p in committed if p not in fresh]


def check() -> int:
    stale = stale_files()
    if stale:
        print(
            f"generated protobuf code is stale: {', '.join(stale)}; "
            "run `python scripts/gen_protos.py`",
            file=sys.stderr,
        )
        return 1
    print("generated protobuf code is up to date")
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
