"""`kmr lsp`: the language server (pygls 2) on stdio.

Contract:
- On open and on every change the document is parsed and checked at once, without
  loading any model (names, types, units): those diagnostics are published before the
  handler returns. Then one background worker checks it *with* model facts (the same
  provider as `kmr check`: the facts cache, else the model is loaded) and verifies
  every pipeline; its diagnostics (codes and spans as `kmr check` reports them) replace
  the quick ones. An edit cancels that work: a newer version makes the worker drop what
  it computed and not start the next pipeline (a running solver call is bounded by its
  resource limit).
- Hover, completion, definition and formatting answer from the latest snapshot.
- Nothing a document contains crashes or hangs the server: every handler catches
  everything and answers (empty result or a KMR500 diagnostic), and the checker itself
  never raises.
- Loading a model runs the code its loader names (as `kmr check` does), so it needs
  the user's decision: `--load-models` (the VS Code extension passes it only in a
  trusted workspace). Without it, only cached facts are used; a model whose facts are
  not cached gets a note and its pipelines are not verified.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types as t
from pygls.lsp.server import LanguageServer

from kmr_dsl import __version__
from kmr_dsl.diagnostics import Diagnostic, KmrError, Severity, Span, error
from kmr_dsl.lsp import features
from kmr_dsl.lsp.analysis import Analysis, span_range

log = logging.getLogger("kmr.lsp")
_SEVERITY = {Severity.ERROR: t.DiagnosticSeverity.Error, Severity.WARNING: t.DiagnosticSeverity.Warning,
             Severity.NOTE: t.DiagnosticSeverity.Information}


def uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri  # an unsaved buffer: imports resolve relative to the working folder


def path_to_uri(path: str) -> str:
    return Path(path).resolve().as_uri()


def to_lsp(d: Diagnostic) -> t.Diagnostic:
    sl, sc, el, ec = span_range(d.span)
    message = d.message + "".join(f"\n{n}" for n in d.notes) + (f"\nhint: {d.hint}" if d.hint else "")
    return t.Diagnostic(range=t.Range(t.Position(sl, sc), t.Position(el, ec)), message=message,
                        severity=_SEVERITY.get(d.severity, t.DiagnosticSeverity.Error), code=d.code,
                        source="kmr")


class KmrServer(LanguageServer):
    def __init__(self, load_models: bool = False, rlimit: int | None = None):
        super().__init__("kmr", __version__)
        self.load_models = load_models
        self.rlimit = rlimit
        self.snapshots: dict[str, Analysis] = {}
        self.full: dict[str, object] = {}         # uri -> program checked with facts
        self.versions: dict[str, int] = {}
        self.layers: dict[str, tuple[str, ...]] = {}  # uri -> layer names of its models (kept across edits)
        self._pending: dict[str, tuple[int, str, str]] = {}
        self._wake = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        threading.Thread(target=self._worker, name="kmr-verify", daemon=True).start()

    # ------------------------------------------------------------ quick pass

    def analyse(self, uri: str, text: str, version: int) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the server (tests of the class itself)
                self._loop = None
        path = uri_to_path(uri)
        try:
            an = Analysis.of(text, path)
        except Exception as exc:  # noqa: BLE001 - defensive: the checker should not raise
            self.publish(uri, version, [error("KMR500", Span(path, 1, 1, 1, 2), f"internal error: {exc}")])
            return
        self.snapshots[uri] = an
        self.versions[uri] = version
        self.full.pop(uri, None)
        self.publish(uri, version, [d for d in an.diagnostics if d.span.file == path or d.span.line <= 0])
        if an.program is not None:  # only a well-formed program is worth loading and proving
            with self._wake:
                self._pending[uri] = (version, text, path)
                self._wake.notify()

    def publish(self, uri: str, version: int, diags: list[Diagnostic]) -> None:
        self.text_document_publish_diagnostics(
            t.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=[to_lsp(d) for d in diags]))

    def stale(self, uri: str, version: int) -> bool:
        return self.versions.get(uri) != version

    # ------------------------------------------------------------ background pass

    def _worker(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                uri, (version, text, path) = self._pending.popitem()
            try:
                result = self._verify(uri, version, text, path)
            except Exception as exc:  # noqa: BLE001 - never let the worker die
                log.exception("background check failed")
                result = None, [error("KMR500", Span(path, 1, 1, 1, 2), f"internal error: {type(exc).__name__}: {exc}")]
            if result is None or self.stale(uri, version) or self._loop is None:
                continue
            program, diags = result
            self._loop.call_soon_threadsafe(self._deliver, uri, version, program, diags)

    def _deliver(self, uri, version, program, diags) -> None:
        if self.stale(uri, version):
            return
        if program is not None:
            self.full[uri] = program
            self.layers[uri] = tuple(sorted({layer.name for m in program.models.values() if m.facts
                                             for layer in m.facts.layers}))
        self.publish(uri, version, diags)

    def _verify(self, uri: str, version: int, text: str, path: str):
        from kmr_dsl.check import check_with_sources

        program, diags, _ = check_with_sources(text, path, facts_provider=self._provider)
        diags = [d for d in diags if d.span.file == path or d.span.line <= 0]
        if program is None or self.stale(uri, version):
            return program, diags
        if any(m.facts is None for m in program.models.values()):
            return None, diags
        from kmr_dsl.verify import verify

        opts = {"rlimit": self.rlimit} if self.rlimit else {}
        for name in program.pipelines:
            if self.stale(uri, version):
                return None  # cancelled by an edit
            report = verify(program, name, **opts)
            diags += [d for d in report.diagnostics if d.span.file == path or d.span.line <= 0]
        return program, diags

    def _provider(self, spec, trust: bool, span: Span):
        from kmr_dsl.facts import load_cached

        if self.load_models:
            from kmr_dsl.app import facts_provider  # the cache, else the model (as `kmr check`)

            return facts_provider(spec, trust, span)
        cached = load_cached(spec)
        if cached is not None:
            return cached
        raise KmrError(Diagnostic("KMR216", Severity.NOTE, span,
                                  "model facts not cached: selectors and proofs wait for them",
                                  hint="run `kmr check` on the file once, or start the server with "
                                       "--load-models (it runs the loader's code)"))

    def layer_names(self, uri: str) -> tuple[str, ...]:
        return self.layers.get(uri, ())


def build(load_models: bool = False, rlimit: int | None = None) -> KmrServer:
    server = KmrServer(load_models, rlimit)

    def guarded(default):
        """Every request is answered: a handler's failure is logged and gives `default`."""
        def wrap(fn):
            def run(ls, params):
                try:
                    return fn(ls, params)
                except Exception:  # noqa: BLE001 - the editor must get an answer
                    log.exception("%s failed", fn.__name__)
                    return default
            run.__name__ = fn.__name__
            return run
        return wrap

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    @guarded(None)
    def did_open(ls: KmrServer, params: t.DidOpenTextDocumentParams):
        doc = params.text_document
        ls.analyse(doc.uri, doc.text, doc.version)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    @guarded(None)
    def did_change(ls: KmrServer, params: t.DidChangeTextDocumentParams):
        doc = ls.workspace.get_text_document(params.text_document.uri)
        ls.analyse(doc.uri, doc.source, params.text_document.version)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    @guarded(None)
    def did_close(ls: KmrServer, params: t.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        for store in (ls.snapshots, ls.full, ls.versions, ls.layers):
            store.pop(uri, None)
        ls.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    @guarded(None)
    def hover(ls: KmrServer, params: t.HoverParams):
        an = ls.snapshots.get(params.text_document.uri)
        if an is None:
            return None
        pos = params.position
        text = features.hover(an, pos.line, pos.character, ls.full.get(params.text_document.uri))
        if text is None:
            return None
        return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text))

    @server.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(trigger_characters=["(", "\"", " "]))
    @guarded(t.CompletionList(is_incomplete=False, items=[]))
    def completion(ls: KmrServer, params: t.CompletionParams):
        uri = params.text_document.uri
        an = ls.snapshots.get(uri)
        items = []
        if an is not None:
            # the snapshot is of the last text that parsed far enough; read the live line
            live = ls.workspace.get_text_document(uri).source
            an_live = Analysis(an.path, live, an.closure, an.diagnostics, an.program, an.symbols)
            pos = params.position
            for it in features.complete(an_live, pos.line, pos.character, ls.layer_names(uri)):
                items.append(t.CompletionItem(label=it.label, kind=t.CompletionItemKind(it.kind),
                                              detail=it.detail, insert_text=it.insert))
        return t.CompletionList(is_incomplete=False, items=items)

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    @guarded(None)
    def definition(ls: KmrServer, params: t.DefinitionParams):
        an = ls.snapshots.get(params.text_document.uri)
        if an is None:
            return None
        found = features.definition(an, params.position.line, params.position.character)
        if found is None:
            return None
        file, span = found
        uri = params.text_document.uri if file == an.path else path_to_uri(file)
        sl, sc, el, ec = span_range(span)
        return t.Location(uri=uri, range=t.Range(t.Position(sl, sc), t.Position(el, ec)))

    @server.feature(t.TEXT_DOCUMENT_FORMATTING)
    @guarded(None)
    def formatting(ls: KmrServer, params: t.DocumentFormattingParams):
        from kmr_dsl.fmt import format_source

        doc = ls.workspace.get_text_document(params.text_document.uri)
        text = doc.source
        formatted, _ = format_source(text, uri_to_path(doc.uri))
        if formatted is None or formatted == text:
            return [] if formatted is not None else None  # a malformed file: its errors are diagnostics
        lines = text.split("\n")
        end = t.Position(len(lines) - 1, len(lines[-1]))
        return [t.TextEdit(range=t.Range(t.Position(0, 0), end), new_text=formatted)]

    return server


def lsp_command(args) -> int:
    """`kmr lsp`: serve on stdio until the client exits."""
    logging.basicConfig(level=logging.WARNING, format="kmr-lsp %(levelname)s %(message)s")
    build(load_models=args.load_models, rlimit=args.rlimit).start_io()
    return 0
