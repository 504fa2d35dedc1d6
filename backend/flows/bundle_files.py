"""A bundle as text files by relative path: the unit that is drafted, checked and published.

The files (flows, locales, triage rules, resources, service hours, canned responses and the
dialog tables) travel as one mapping from a relative path to its text, whether they come from a
directory in git, the database or the console's editor. Everything that reaches this mapping is
screened first: only the paths a bundle has (so no `..`, no absolute path, nothing outside the
known folders), UTF-8 text, a cap per file and on the whole, so a hostile upload is refused
with one clear line before any YAML parser sees it.

`check` lints and tests the files the same way `hotline flows check|test` does a directory: it
writes them into a private temporary directory and runs the same loader, so the directory and
the database can never disagree about what is valid. Findings name the bundle's relative paths.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from backend.core.errors import N_, FlowError
from backend.flows import source
from backend.flows.dialogs import Coverage, Report, run_directory
from backend.flows.engine import Bundle
from backend.flows.lint import Problem
from backend.flows.registry import load_bundle

BundleFiles = Mapping[str, str]

MAX_FILE_BYTES = source.MAX_FILE_BYTES
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_FILES = 200
# Every path a bundle may hold; anything else is refused, not ignored, so an upload that means
# something else (a stray folder, `../../etc`) says so.
_ALLOWED = re.compile(
    r"^(?:[a-z][a-z0-9_]{0,40}\.flow\.yaml"
    r"|locales/[a-z]{2,3}(?:-[a-z0-9]{2,8})?\.yaml"
    r"|canned/[a-z]{2,3}(?:-[a-z0-9]{2,8})?\.yaml"
    r"|tests/[a-z0-9_-]{1,40}\.test\.yaml"
    r"|triage\.yaml|resources\.yaml|service\.yaml)$"
)
MIN_COVERAGE = 90.0


class BundleRefusedError(FlowError):
    """A bundle's files break a rule of their own (a path, a size, an encoding)."""


def check_paths(files: BundleFiles) -> None:
    """Refuse a path outside the bundle's layout, a file or a bundle over its cap."""
    if not files:
        raise BundleRefusedError(N_("the bundle is empty"))
    if len(files) > MAX_FILES:
        raise BundleRefusedError(
            N_("%(n)s files is over the limit of %(limit)s"), n=len(files), limit=MAX_FILES
        )
    total = 0
    for path, text in files.items():
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or "\\" in path or not _ALLOWED.match(path):
            raise BundleRefusedError(
                N_(
                    "“%(path)s”: not a bundle file (flows `*.flow.yaml`, `locales/`, `canned/`, "
                    "`tests/*.test.yaml`, `triage.yaml`, `resources.yaml`, `service.yaml`)"
                ),
                path=path,
            )
        size = len(text.encode("utf-8"))
        if size > MAX_FILE_BYTES:
            raise BundleRefusedError(
                N_("%(path)s: %(size)s bytes is over the %(limit)s-byte cap"),
                path=path,
                size=size,
                limit=MAX_FILE_BYTES,
            )
        total += size
    if total > MAX_BUNDLE_BYTES:
        raise BundleRefusedError(
            N_("the bundle's %(size)s bytes are over %(limit)s"), size=total, limit=MAX_BUNDLE_BYTES
        )


def read_directory(directory: Path) -> dict[str, str]:
    """The bundle files of a directory; refuses links, unknown files in known places, and size."""
    if not directory.is_dir():
        raise BundleRefusedError(f"{directory}: not a directory")
    files: dict[str, str] = {}
    total = 0
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink():
            raise BundleRefusedError(f"{relative}: a link; a bundle holds plain files only")
        if path.is_dir() or not path.name.endswith(".yaml"):
            continue
        size = path.stat().st_size
        total += size
        if size > MAX_FILE_BYTES:
            raise BundleRefusedError(
                f"{relative}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit"
            )
        if total > MAX_BUNDLE_BYTES or len(files) >= MAX_FILES:
            raise BundleRefusedError(f"over {MAX_BUNDLE_BYTES} bytes or {MAX_FILES} files")
        try:
            files[relative] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise BundleRefusedError(f"{relative}: is not UTF-8 text") from None
    check_paths(files)
    return files


def write_directory(files: BundleFiles, directory: Path) -> None:
    """Write the files under `directory` (made if missing); the paths were screened."""
    check_paths(files)
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def digest(files: BundleFiles) -> str:
    """SHA-256 of the paths and texts in path order: the version a conversation is pinned to."""
    hashed = hashlib.sha256()
    for path in sorted(files):
        data = files[path].encode("utf-8")
        hashed.update(f"{path}\0{len(data)}\0".encode())
        hashed.update(data)
    return hashed.hexdigest()


@dataclass
class Checked:
    """What `check` found: the compiled bundle (None on any error), the linter's findings, and
    the dialog tables' report and coverage (None when the lint failed first)."""

    bundle: Bundle | None
    problems: list[Problem]
    report: Report | None = None
    coverage: Coverage | None = None
    test_error: str | None = None
    under_coverage: list[str] = field(default_factory=list)
    # The error behind `test_error`, so the console can say it in its language.
    test_exception: FlowError | None = field(default=None, repr=False)

    @property
    def publishable(self) -> bool:
        return (
            self.bundle is not None
            and self.report is not None
            and not self.report.failures
            and self.test_error is None
            and not self.under_coverage
        )

    def reasons(self, translate: Callable[[str], str] = str) -> list[str]:
        """Why it may not be published, one line each: in English, or the linter's findings
        and the coverage through `translate` (the console's gettext), values as they are."""
        lines = [
            f"{p.source}:{p.line}: {p.code} {p.text(translate)}"
            for p in self.problems
            if p.is_error
        ]
        test_error = self.test_error_text(translate)
        if test_error is not None:
            lines.append(test_error)
        if self.report is not None:
            lines += [f"FAIL {f.text(translate)}" for f in self.report.failures]
        under = translate(N_("%(flow)s: transitions under %(percent)s%%"))
        lines += [
            under % {"flow": name, "percent": f"{MIN_COVERAGE:.0f}"} for name in self.under_coverage
        ]
        return lines

    def test_error_text(self, translate: Callable[[str], str] = str) -> str | None:
        """`test_error` with its text through `translate`; the place before it as it is."""
        exc, said = self.test_exception, self.test_error
        if said is None or exc is None or exc.message_id is None:
            return said
        english = exc.message_id % exc.values if exc.values else exc.message_id
        if not said.endswith(english):
            return said
        translated = translate(exc.message_id)
        if exc.values:
            translated = translated % exc.values
        return said[: len(said) - len(english)] + translated


def compile_files(files: BundleFiles) -> tuple[Bundle | None, list[Problem]]:
    """Lint and compile; the bundle's version is its digest."""
    check_paths(files)
    with tempfile.TemporaryDirectory(prefix="hotline-bundle-") as temporary:
        root = Path(temporary)
        write_directory(files, root)
        bundle, problems = load_bundle(root)
        problems = [_relative(p, root) for p in problems] + _screen_canned(files)
    if any(p.is_error for p in problems):
        bundle = None
    if bundle is not None:
        bundle = replace(bundle, version=digest(files))
    return bundle, problems


def check(files: BundleFiles, *, run_tests: bool = True) -> Checked:
    """Lint, compile and run the dialog tables, as `hotline flows check` and `test` would."""
    check_paths(files)
    with tempfile.TemporaryDirectory(prefix="hotline-bundle-") as temporary:
        root = Path(temporary)
        write_directory(files, root)
        bundle, problems = load_bundle(root)
        problems = [_relative(p, root) for p in problems] + _screen_canned(files)
        checked = Checked(None, problems)
        if bundle is None or any(p.is_error for p in problems):
            return checked
        checked.bundle = replace(bundle, version=digest(files))
        if not run_tests:
            return checked
        try:
            checked.report, checked.coverage = run_directory(bundle, root)
        except FlowError as exc:
            checked.test_error = f"F000 {_strip(str(exc), root)}"
            checked.test_exception = exc
            return checked
    for name in sorted(bundle.flows):
        if checked.coverage is not None and checked.coverage.transitions(name) < MIN_COVERAGE:
            checked.under_coverage.append(name)
    if checked.report is not None:
        checked.report.failures = [
            replace(f, source=_strip(f.source, root)) for f in checked.report.failures
        ]
    return checked


def _screen_canned(files: BundleFiles) -> list[Problem]:
    """Canned responses are read by the console; screened here like every other YAML file (no
    anchors, no depth), so the console's reader never meets a hostile document."""
    found: list[Problem] = []
    for path in sorted(files):
        if path.startswith("canned/"):
            try:
                data = source.parse(files[path], path).data
            except FlowError as exc:
                found.append(Problem.from_error(exc, path))
                continue
            if not isinstance(data, list):
                found.append(Problem.of("F000", path, 1, N_("expected a list of canned responses")))
    return found


def _strip(text: str, root: Path) -> str:
    return text.replace(f"{root}/", "").replace(str(root), "bundle")


def _relative(problem: Problem, root: Path) -> Problem:
    return replace(
        problem, source=_strip(problem.source, root), message=_strip(problem.message, root)
    )
