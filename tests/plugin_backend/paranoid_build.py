"""A PEP 517 build back end for this one-module package, with the standard
library only: the test installs the plug-in offline, without setuptools or
wheel (neither is guaranteed where the tests run)."""
import base64
import hashlib
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
MODULE = "virtlab_paranoid.py"


def _project():
    return tomllib.loads((HERE / "pyproject.toml").read_text())["project"]


def _files():
    p = _project()
    dist = f"{p['name'].replace('-', '_')}-{p['version']}"
    meta = (f"Metadata-Version: 2.1\nName: {p['name']}\nVersion: {p['version']}\n"
            f"Summary: {p['description']}\n")
    eps = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
                  for group, table in p["entry-points"].items())
    wheel = "Wheel-Version: 1.0\nGenerator: paranoid_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {MODULE: (HERE / MODULE).read_bytes(),
             f"{dist}.dist-info/METADATA": meta.encode(),
             f"{dist}.dist-info/entry_points.txt": eps.encode(),
             f"{dist}.dist-info/WHEEL": wheel.encode()}
    return dist, files


def _digest(data):
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist, files = _files()
    record = f"{dist}.dist-info/RECORD"
    name = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w") as zf:
        lines = []
        for path, data in files.items():
            zf.writestr(path, data)
            lines.append(f"{path},{_digest(data)},{len(data)}")
        zf.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError("install this test package from its directory")
