"""The flows studio: administrators edit, check, test, try, draw, publish and roll back flows.

Every route is `Access.ADMINISTRATOR` (a two-factor sign-in, `access.guard`); every form posts
with the session's CSRF token from our origin. Edits go to the administrator's draft in the
database (`flow_versions.FlowVersionStore`), so a half-done edit never reaches a victim; only
"Publish" makes a version, and only when the linter and the dialog tables pass. "Try it" runs
the draft in a sandbox that carries out nothing (`backend/flow_sandbox.py`). The diagram is
Mermaid, served from our own origin (`static/vendor/`) under the console's CSP.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from backend.console.access import Access, current_session, guard
from backend.console.forms import read_form, render
from backend.console.i18n import error_text
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.core.errors import FlowError
from backend.flow_sandbox import Sandbox
from backend.flow_versions import FlowVersionStore, PublishRefusedError, check_bundle
from backend.flows import bundle_files
from backend.flows.diagram import mermaid
from backend.web import engine_key, redis_key

log = logging.getLogger(__name__)

store_key = web.AppKey("console_flow_versions", FlowVersionStore)
sandbox_key = web.AppKey("console_flow_sandbox", Sandbox)
MAX_EDIT_CHARS = bundle_files.MAX_FILE_BYTES
# PyYAML's "line 40, column 23" in a broken file's message.
_PARSER_COLUMN = re.compile(r"line \d+, column (\d+)")


def _actor(session: ConsoleSession) -> str:
    return f"counselor:{session.counselor_id}"


async def _working_files(
    request: web.Request, session: ConsoleSession
) -> tuple[dict[str, str], bool, int | None]:
    """The draft's files (and True), or the published version's when there is no draft."""
    store = request.app[store_key]
    draft = await store.draft(session.counselor_id)
    if draft is not None:
        return draft.files, True, draft.base_version
    published = await store.published()
    if published is None:
        return {}, False, None
    return await store.files(published.number), False, published.number


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    session = current_session(request)
    store = request.app[store_key]
    files, is_draft, base = await _working_files(request, session)
    chosen = request.query.get("file") or extra.pop("file", None) or _first(files)
    text = files.get(chosen, "") if chosen else ""
    trial = await request.app[sandbox_key].show(session.counselor_id)
    context: dict[str, Any] = {
        "session": session,
        "files": sorted(files),
        "chosen": chosen,
        "text": text,
        "lines": max(1, text.count("\n") + 1),
        "goto": request.query.get("line", ""),
        "is_draft": is_draft,
        "base": base,
        "versions": await store.versions(),
        "flows": sorted(p.removesuffix(".flow.yaml") for p in files if p.endswith(".flow.yaml")),
        "trial": trial,
        "findings": None,
        "checked": None,
        "mode": "",
        "coverage": [],
        "diff": None,
        "refused": None,
        "notice": "",
        "test_error": None,
        "failures": [],
    }
    context.update(extra)
    return render("studio.html", status=status, **context)


def _first(files: dict[str, str]) -> str | None:
    return "report.flow.yaml" if "report.flow.yaml" in files else next(iter(sorted(files)), None)


async def studio_page(request: web.Request) -> web.Response:
    return await _page(request)


async def save(request: web.Request) -> web.Response:
    """Save one file into the administrator's draft (made from the published version)."""
    session = current_session(request)
    form = await read_form(request, session)
    path, text = form.get("file", ""), form.get("text", "").replace("\r\n", "\n")
    files, _is_draft, base = await _working_files(request, session)
    if path not in files and not form.get("new"):
        raise web.HTTPBadRequest(text=_("no such file in the bundle"))
    files = {**files, path: text}
    try:
        await request.app[store_key].save_draft(session.counselor_id, files, base)
    except FlowError as exc:
        return await _page(request, status=400, notice=error_text(exc), file=path)
    raise web.HTTPSeeOther(f"/console/studio?file={path}")


async def discard(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    await request.app[store_key].discard_draft(session.counselor_id)
    raise web.HTTPSeeOther("/console/studio")


async def check(request: web.Request) -> web.Response:
    """Lint the draft: each finding with its code, file, line and column."""
    return await _checked(request, "check")


async def test(request: web.Request) -> web.Response:
    """Run the dialog tables against the draft, with the coverage table."""
    return await _checked(request, "test")


async def _checked(request: web.Request, mode: str) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    files, _d, _b = await _working_files(request, session)
    try:
        checked = check_bundle(files)
    except FlowError as exc:
        return await _page(request, status=400, notice=error_text(exc))
    # Each finding in the counselor's language, its values (files, steps, keys) as they are;
    # the column is read from the English, where the parser's words stay.
    findings = [
        Finding(
            p.code,
            p.source,
            p.line,
            _column(files.get(p.source, ""), p.line, p.message),
            p.text(_),
        )
        for p in checked.problems
    ]
    coverage = []
    if mode == "test" and checked.bundle is not None and checked.coverage is not None:
        coverage = [
            (n, checked.coverage.transitions(n), checked.coverage.states(n))
            for n in sorted(checked.bundle.flows)
        ]
    return await _page(
        request,
        mode=mode,
        findings=findings,
        checked=checked,
        test_error=checked.test_error_text(_),
        failures=[f.text(_) for f in checked.report.failures] if checked.report else [],
        coverage=coverage,
        file=form.get("file"),
    )


@dataclass(frozen=True)
class Finding:
    code: str
    file: str
    line: int
    column: int
    message: str


def _column(text: str, line: int, message: str) -> int:
    """The parser's column when it gave one (broken YAML), else where the finding's line starts
    (its first character that is not a space): the linter knows lines, and the value a finding
    names begins there."""
    told = _PARSER_COLUMN.search(message)
    if told is not None:
        return int(told.group(1))
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return 1
    content = lines[line - 1]
    return len(content) - len(content.lstrip(" ")) + 1


async def diff(request: web.Request) -> web.Response:
    """The draft against the published version, as a unified diff per file."""
    session = current_session(request)
    store = request.app[store_key]
    files, _d, _b = await _working_files(request, session)
    published = await store.published()
    before = {} if published is None else await store.files(published.number)
    chunks: list[str] = []
    for path in sorted(set(files) | set(before)):
        old, new = before.get(path, ""), files.get(path, "")
        if old != new:
            chunks += difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                f"published/{path}",
                f"draft/{path}",
            )
    return await _page(
        request, diff="".join(chunks) or _("No difference from the published version.")
    )


async def try_it(request: web.Request) -> web.Response:
    """One turn of the draft in the sandbox: nothing reaches the queue or a counselor."""
    session = current_session(request)
    form = await read_form(request, session)
    files, _d, _b = await _working_files(request, session)
    sandbox = request.app[sandbox_key]
    if form.get("restart"):
        await sandbox.reset(session.counselor_id)
    text = form.get("text", "").strip()[:4000] or None
    button = form.get("button") or None
    if form.get("restart") and text is None:
        text = "/start"
    await sandbox.turn(
        session.counselor_id,
        files,
        bundle_files.digest(files) if files else "",
        text=text,
        button=button,
        language=form.get("language", "ko")[:8],
    )
    raise web.HTTPSeeOther("/console/studio#try")


async def publish(request: web.Request) -> web.Response:
    """Publish the draft as a new version, refused unless lint and tests pass."""
    session = current_session(request)
    form = await read_form(request, session)
    message = form.get("message", "").strip()
    if not message:
        return await _page(request, status=400, notice=_("say why, in a message"))
    draft = await request.app[store_key].draft(session.counselor_id)
    if draft is None:
        return await _page(request, status=400, notice=_("there is no draft to publish"))
    try:
        published = await request.app[store_key].publish(draft.files, _actor(session), message)
    except PublishRefusedError as exc:
        reasons = exc.reasons if exc.checked is None else exc.checked.reasons(_)
        return await _page(request, status=409, notice=error_text(exc), refused=reasons)
    except FlowError as exc:
        return await _page(request, status=409, notice=error_text(exc))
    await request.app[store_key].discard_draft(session.counselor_id)
    if published.pending:
        log.info("counselor %d asked to publish version %d", session.counselor_id, published.number)
        return await _page(
            request,
            notice=_("Version %(n)s waits for a second administrator's approval.")
            % {"n": published.number},
        )
    log.info("counselor %d published flows version %d", session.counselor_id, published.number)
    return await _page(request, notice=_("Published version %(n)s.") % {"n": published.number})


async def approve(request: web.Request) -> web.Response:
    """A second administrator approves a waiting version: it is published."""
    session = current_session(request)
    await read_form(request, session)
    try:
        number = int(request.match_info["version"])
        done = await request.app[store_key].approve(number, _actor(session))
    except ValueError:
        return await _page(request, status=409, notice=_("no such version"))
    except FlowError as exc:
        return await _page(request, status=409, notice=error_text(exc))
    return await _page(
        request, notice=_("Version %(n)s approved and published.") % {"n": done.number}
    )


async def rollback(request: web.Request) -> web.Response:
    """Publish an earlier version again, in one step."""
    session = current_session(request)
    await read_form(request, session)
    try:
        number = int(request.match_info["version"])
        back = await request.app[store_key].rollback(number, _actor(session))
    except ValueError:
        return await _page(request, status=409, notice=_("no such version"))
    except FlowError as exc:
        return await _page(request, status=409, notice=error_text(exc))
    return await _page(request, notice=_("Version %(n)s is published again.") % {"n": back.number})


async def diagram(request: web.Request) -> web.Response:
    session = current_session(request)
    files, _d, _b = await _working_files(request, session)
    bundle, problems = bundle_files.compile_files(files)
    name = request.query.get("flow", "report")
    if bundle is None or name not in bundle.flows:
        errors = [f"{p.source}:{p.line}: {p.code} {p.text(_)}" for p in problems if p.is_error][
            :5
        ] or [_("no flow “%(flow)s”") % {"flow": name}]
        return render("studio_diagram.html", session=session, flow=name, graph=None, errors=errors)
    graph = mermaid(bundle.flows[name].spec)
    return render("studio_diagram.html", session=session, flow=name, graph=graph, errors=[])


def _static(name: str, content_type: str) -> Any:
    async def serve(_request: web.Request) -> web.Response:
        body = (resources.files("backend.console") / "static" / name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return serve


def add_routes(app: web.Application, *, approval: bool = False) -> None:
    """`approval`: a publish waits for a second administrator (HOTLINE_FLOWS_PUBLISH_APPROVAL)."""
    app[store_key] = FlowVersionStore(app[engine_key], app[redis_key], approval=approval)
    app[sandbox_key] = Sandbox(app[redis_key])
    admin = (
        ("GET", "/console/studio", studio_page),
        ("POST", "/console/studio/save", save),
        ("POST", "/console/studio/discard", discard),
        ("POST", "/console/studio/check", check),
        ("POST", "/console/studio/test", test),
        ("GET", "/console/studio/diff", diff),
        ("POST", "/console/studio/try", try_it),
        ("POST", "/console/studio/publish", publish),
        ("POST", "/console/studio/rollback/{version}", rollback),
        ("POST", "/console/studio/approve/{version}", approve),
        ("GET", "/console/studio/diagram", diagram),
    )
    for method, path, handler in admin:
        app.router.add_route(method, path, guard(Access.ADMINISTRATOR, handler))
    public = (
        ("/console/static/studio.js", "studio.js", "text/javascript"),
        ("/console/static/studio_diagram.js", "studio_diagram.js", "text/javascript"),
        ("/console/static/vendor/mermaid.min.js", "vendor/mermaid.min.js", "text/javascript"),
    )
    for path, name, content_type in public:
        app.router.add_route("GET", path, guard(Access.PUBLIC, _static(name, content_type)))
