"""Write build/remote.sh: deploy/remote.sh (the sh bootstrap) with the host program,
deploy/host/, zipped after it. sh runs the first part, Python the zip (a zip is read from
its end, so the script in front does not matter to it). Byte for byte the same for the same
sources: the host keeps its copy until the sha256 differs. Standard library only.

    python3 deploy/bundle.py OUT
"""
import sys
import zipfile
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent


def members() -> list[tuple[str, Path]]:
    """(name in the zip, source): __main__.py at the top, the package as host/."""
    sources = sorted((DEPLOY / "host").glob("*.py"))
    return [("__main__.py", DEPLOY / "host" / "__main__.py"), *((f"host/{p.name}", p) for p in sources)]


def bundle(out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write((DEPLOY / "remote.sh").read_bytes())
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, source in members():
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                archive.writestr(info, source.read_bytes())
    tmp.chmod(0o755)
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bundle.py OUT")
    Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
    bundle(Path(sys.argv[1]))
