#!/usr/bin/env python3
"""ClickHouse's HTTP interface in front of the real ClickHouse engine (chDB), for tests.

Test support, not product code (started by tests/it/support/clickhouse.rs). It serves what the
official Rust `clickhouse` crate sends and answers anything else with a loud error instead of
guessing.

    python chdb_front.py --data DIR --port PORT     # PORT 0 picks a free one

Prints `LISTENING <port>` once it accepts connections, then serves until killed. All databases
live on disk under DIR, so a restart on the same DIR finds them again (also after SIGKILL: the
engine's lock on DIR/status dies with the process).

What it does, as ClickHouse's HTTP interface does it:
- `GET /ping` (and a bare `GET /`) answers `Ok.`; `GET /` and `POST /` run one statement
  (GET only read-only ones, as in ClickHouse).
- The SQL is the `query` URL parameter followed by the body; for an INSERT that has a `query`
  parameter, the body is the INSERT's data instead. A `multipart/form-data` body (what the
  client sends for `.param()`) carries the SQL in field `query` and query parameters in fields
  `param_NAME`; URL parameters `param_NAME` are query parameters too.
- `database` = the statement's default database, `default_format` = its output format when it
  has no FORMAT clause (TabSeparated when absent). Every other URL parameter that is not a reserved
  HTTP parameter is a setting for that statement only (unknown settings fail in the engine).
- Engine errors come back as ClickHouse does: status by exception code, header
  `X-ClickHouse-Exception-Code: N`, body `Code: N. DB::Exception: ... (NAME)`.

Not supported (answered with `Code: 0. DB::Exception: chdb_front: ...`): ClickHouse's compressed
framing (`compress=1`/`decompress=1`), `Content-Encoding` request bodies, external tables, SET
statements (they would leak into every later request of the shared engine session), `readonly`.
Responses are never compressed (`Accept-Encoding` is ignored, which HTTP allows).
Differences from a server that remain: the engine runs multi-statement texts
(`SELECT 1; SELECT 2`) where the server refuses them; `implicit_select` and
`allow_introspection_functions` default to 1 (clickhouse-local defaults).
"""

import argparse
import http.server
import os
import re
import sys
import tempfile
import threading
import traceback
import urllib.parse

from chdb import session

# URL parameters ClickHouse's HTTP handler treats as its own, not as settings. The ones the
# front honours are handled explicitly; the rest are harmless for a single-user test peer.
IGNORED_PARAMS = {
    "user", "password", "quota_key", "query_id", "stacktrace", "role", "buffer_size",
    "wait_end_of_query", "session_id", "session_timeout", "session_check", "close_session",
    "client_protocol_version",
}
UNSUPPORTED_PARAMS = {
    "compress": "compressed responses (compress=1, ClickHouse's LZ4 block framing) are not "
                "supported by the test front; use Compression::None",
    "decompress": "compressed request bodies (decompress=1, ClickHouse's LZ4 block framing) are "
                  "not supported by the test front; use Compression::None",
    "readonly": "the readonly setting is not supported by the test front",
}
# Headers the client may send that the front ignores (auth of a single-user peer).
IGNORED_HEADERS = {"x-clickhouse-user", "x-clickhouse-key", "x-clickhouse-quota"}

# exceptionCodeToHTTPStatus (ClickHouse src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), by name.
STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
         "ACCESS_DENIED"], 403),
    **dict.fromkeys(
        ["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
         "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
         "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
         "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
         "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST",
         "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
         "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
         "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"], 400),
    **dict.fromkeys(
        ["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
         "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
         "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
         "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"], 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# chDB pseudo-formats that are Python objects, not ClickHouse output formats.
PSEUDO_FORMATS = {"dataframe", "arrowtable", "debug"}

SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FORMAT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# One identifier as ClickHouse writes it: `back quoted`, "double quoted" or bare.
IDENT = r'(?:`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*)'
COLUMN = rf"{IDENT}(?:\s*\.\s*{IDENT})*"
# `INSERT INTO [TABLE] [db.]t [(cols)] [SETTINGS ...] FORMAT Name` or `... VALUES`, nothing after.
INSERT_WITH_DATA = re.compile(
    rf"""\s*INSERT\s+INTO\s+(?:TABLE\s+)?
         (?P<table>{IDENT}(?:\s*\.\s*{IDENT})?)\s*
         (?P<cols>\(\s*{COLUMN}(?:\s*,\s*{COLUMN})*\s*\))?\s*
         (?:SETTINGS\s+(?P<settings>.+?)\s+)?
         (?:FORMAT\s+(?P<format>[A-Za-z][A-Za-z0-9]*)|(?P<values>VALUES))\s*;?\s*\Z""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
CODE_PREFIX = re.compile(r"Code: (\d+)\. ")
VERSION_TAIL = re.compile(r"(\(([A-Z][A-Z0-9_]*)\) \(version [^()]*\))(?:\. \(\2\)(?: \(version [^()]*\))?)+\s*\Z")
TRAILING_NAME = re.compile(r"\(([A-Z][A-Z0-9_]*)\)(?: \(version [^()]*\))?\s*\Z")
# Statements a GET may run (GET implies readonly in ClickHouse).
READ_ONLY_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}


class FrontError(Exception):
    """Something the front itself cannot or will not do; answered as `Code: <code>.`."""

    def __init__(self, status, message, code=0):
        super().__init__(message)
        self.status = status
        self.code = code


class EngineError(Exception):
    """A chDB exception, already in ClickHouse's `Code: N. DB::Exception: ...` form."""

    def __init__(self, message):
        message = message.strip()
        # Errors of INSERT ... FROM INFILE come wrapped twice: `Code: 27. DB::Exception: Code: 27.
        # DB::Exception: ...`; keep one.
        while True:
            first = CODE_PREFIX.match(message)
            if not first:
                break
            rest = message[first.end():]
            inner = rest[len("DB::Exception: "):] if rest.startswith("DB::Exception: ") else None
            if inner is None or not inner.startswith(first.group(0)):
                break
            message = inner
        # ... and some end `(NAME) (version V). (NAME) [(version V)]...`; a server's end `(NAME) (version V)`.
        message = VERSION_TAIL.sub(r"\1", message)
        super().__init__(message)
        first = CODE_PREFIX.match(message)
        self.code = int(first.group(1)) if first else 0
        name = TRAILING_NAME.search(message)
        self.status = STATUS_BY_NAME.get(name.group(1), 500) if name else 500


def quote_ident(name):
    if not name or any(ord(c) < 32 for c in name):
        raise FrontError(400, f"invalid identifier {name!r}")
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """The one chDB session; one statement at a time."""

    def __init__(self, data_dir):
        path = os.path.abspath(data_dir)
        if "?" in path:
            raise SystemExit(f"chdb_front: the data dir must not contain '?': {path}")
        os.makedirs(path, exist_ok=True)
        self.session = session.Session(path)
        self.lock = threading.Lock()

    def _query(self, sql, fmt="TabSeparated", params=None):
        try:
            result = self.session.query(sql, fmt, params=params or {})
        except RuntimeError as e:
            raise EngineError(str(e)) from None
        return result.bytes() if result is not None else b""

    def run(self, sql, fmt, params, database, settings):
        """Runs one statement with `settings` applied to it alone; returns its output."""
        with self.lock:
            self._query(f"USE {quote_ident(database or 'default')}")
            applied = []
            try:
                for name, value in settings:
                    self._query(f"SET {name} = {quote_string(value)}")
                    applied.append(name)
                return self._query(sql, fmt, params)
            finally:
                for name in applied:
                    try:
                        self._query(f"SET {name} = DEFAULT")
                    except EngineError as e:
                        # The session now carries a setting it should not: stop loudly.
                        print(f"chdb_front: cannot reset setting {name}: {e}", file=sys.stderr, flush=True)
                        os._exit(70)

    def insert(self, statement, data, database, settings):
        """Runs `INSERT INTO t [(cols)] ... FORMAT X` with `data` as its rows."""
        m = INSERT_WITH_DATA.match(statement)
        if not m:
            raise FrontError(
                501,
                "an INSERT with data in the body must be `INSERT INTO [db.]table [(columns)] "
                f"[SETTINGS ...] FORMAT <name>` or `... VALUES` with nothing after it; got {statement!r}",
            )
        fmt = m.group("format") or "Values"
        clauses = [m.group("settings")] if m.group("settings") else []
        clauses += [f"{name} = {quote_string(value)}" for name, value in settings]
        fd, path = tempfile.mkstemp(prefix="chdb_front_insert_", suffix=".data")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            sql = (
                f"INSERT INTO {m.group('table')} {m.group('cols') or ''} FROM INFILE {quote_string(path)}"
                + (f" SETTINGS {', '.join(clauses)}" if clauses else "")
                + f" FORMAT {fmt}"
            )
            with self.lock:
                self._query(f"USE {quote_ident(database or 'default')}")
                return self._query(sql)
        finally:
            os.unlink(path)


def parse_multipart(content_type, body):
    """`multipart/form-data` → {field name: text}. Files (external tables) are refused."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise FrontError(400, "multipart/form-data without a boundary")
    delimiter = b"--" + m.group(1).encode()
    parts = body.split(delimiter)
    if len(parts) < 3 or parts[0].strip() or not parts[-1].startswith(b"--"):
        raise FrontError(400, "malformed multipart/form-data body")
    fields = {}
    for part in parts[1:-1]:
        if not part.startswith(b"\r\n") or not part.endswith(b"\r\n"):
            raise FrontError(400, "malformed multipart/form-data part")
        head, sep, value = part[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise FrontError(400, "multipart/form-data part without headers")
        head = head.decode("utf-8", "replace")
        name = re.search(r'Content-Disposition:\s*form-data;.*?\bname="([^"]*)"', head, re.IGNORECASE)
        if not name:
            raise FrontError(400, f"multipart/form-data part without a name: {head!r}")
        if re.search(r"\bfilename=", head, re.IGNORECASE):
            raise FrontError(501, "external tables (multipart files) are not supported by the test front")
        fields[name.group(1)] = value.decode("utf-8")
    return fields


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    server_version = "chdb_front"
    engine = None  # set in main()

    def do_GET(self):
        self.handle_request(readonly=True)

    def do_POST(self):
        self.handle_request(readonly=False)

    def handle_request(self, readonly):
        try:
            body = self.read_body()  # always, so the connection stays usable after an error
            status, output, fmt = self.serve(readonly, body)
            ctype = "text/tab-separated-values; charset=UTF-8" if fmt.startswith("TabSeparated") \
                else "application/octet-stream"
            self.answer(status, output, {"Content-Type": ctype, "X-ClickHouse-Format": fmt})
        except EngineError as e:
            self.log_message("engine error %s: %s", e.code, e)
            self.answer_error(e.status, e.code, str(e))
        except FrontError as e:
            self.log_message("front error: %s", e)
            self.answer_error(e.status, e.code, f"DB::Exception: chdb_front: {e}")
        except Exception as e:  # a bug in the front: say so, loudly
            traceback.print_exc()
            self.answer_error(500, 0, f"DB::Exception: chdb_front: internal error: {e!r}")

    def read_body(self):
        if self.headers.get("Content-Encoding"):
            self.close_connection = True
            raise FrontError(501, "request bodies with Content-Encoding are not supported by the test front")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def serve(self, readonly, body):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ping":
            return 200, b"Ok.\n", "TabSeparated"
        if url.path != "/":
            raise FrontError(404, f"no handler for {url.path!r} (the front serves / and /ping)")
        for header in self.headers.keys():
            lower = header.lower()
            if lower.startswith("x-clickhouse-") and lower not in IGNORED_HEADERS:
                raise FrontError(501, f"header {header} is not supported by the test front")

        query, database, default_format = None, None, None
        params, settings = {}, []
        for name, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True, strict_parsing=False):
            if name == "query":
                query = value
            elif name == "database":
                database = value
            elif name == "default_format":
                default_format = value
            elif name.startswith("param_"):
                params[name[len("param_"):]] = value
            elif name in UNSUPPORTED_PARAMS:
                if name in ("compress", "decompress") and value in ("", "0"):
                    continue
                raise FrontError(501, f"{name}={value}: {UNSUPPORTED_PARAMS[name]}")
            elif name in IGNORED_PARAMS:
                continue
            elif SETTING_NAME.match(name):
                settings.append((name, value))
            else:
                raise FrontError(400, f"URL parameter {name!r} is not a setting name")

        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            fields = parse_multipart(ctype, body)
            body = b""
            for name, value in fields.items():
                if name == "query":
                    query = (query or "") + value
                elif name.startswith("param_"):
                    params[name[len("param_"):]] = value
                else:
                    raise FrontError(501, f"multipart field {name!r} is not supported by the test front")
        for name in params:
            if not PARAM_NAME.match(name):
                raise FrontError(400, f"invalid query parameter name {name!r}")

        fmt = default_format or "TabSeparated"
        if not FORMAT_NAME.match(fmt) or fmt.lower() in PSEUDO_FORMATS:
            raise FrontError(400, f"invalid default_format {fmt!r}")

        if query is not None and body and re.match(r"\s*INSERT\b", query, re.IGNORECASE):
            if readonly:
                raise self.readonly_error()
            if params:
                raise FrontError(501, "query parameters on an INSERT with data are not supported by the test front")
            return 200, self.engine.insert(query, body, database, settings), fmt

        sql = (query or "") + body.decode("utf-8")
        if not sql.strip():
            if readonly and query is None:
                return 200, b"Ok.\n", "TabSeparated"  # ClickHouse's answer to a bare `GET /`
            raise FrontError(400, "empty query", code=62)
        keyword = re.match(r"\s*(\w*)", sql).group(1).upper()
        if keyword == "SET":
            raise FrontError(501, "SET statements are not supported by the test front (pass settings as URL parameters)")
        if readonly and keyword not in READ_ONLY_KEYWORDS:
            raise self.readonly_error()
        return 200, self.engine.run(sql, fmt, params, database, settings), fmt

    @staticmethod
    def readonly_error():
        return FrontError(
            500,
            "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
            "readonly. You should use method POST for modifying queries. (READONLY)",
            code=164,
        )

    def answer_error(self, status, code, message):
        if not message.startswith("Code: "):
            message = f"Code: {code}. {message}"
        self.answer(status, (message + "\n").encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(code),
        })

    def answer(self, status, body, headers):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the engine's data directory")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1; 0 picks a free one")
    args = parser.parse_args()

    Handler.engine = Engine(args.data)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
