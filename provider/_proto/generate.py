"""Regenerate the v1alpha1 stubs from protos/v1alpha1/service.proto.

Run as ``python -m provider._proto.generate [OUTPUT_ROOT]``. The stubs are
written under ``OUTPUT_ROOT/provider/_proto/v1alpha1`` (default: the repository
root), so the drift test can generate into a temporary directory and compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "protos" / "v1alpha1"
PACKAGE_PATH = "provider/_proto/v1alpha1"


def generate(output_root: Path) -> list[Path]:
    """Run protoc; return the generated files."""
    from grpc_tools import protoc  # dev dependency, imported only here

    out_dir = output_root / PACKAGE_PATH
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PACKAGE_PATH}={PROTO_DIR}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"{PACKAGE_PATH}/service.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated v1alpha1 stubs; regenerate with `make proto`."""\n')
    return sorted(p for p in out_dir.iterdir() if p.is_file())


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    for path in generate(root):
        print(path)
