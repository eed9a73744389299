"""Fills the staging tables on PostgreSQL: find the source files, load them, cast them to
typed rows with set-based statements. Nothing is parsed in Python.

Source files are *.json, or *.json.gz decompressed as they are read, in blocks. A daily
load (select_days) keeps the log files of some days, by the date in their path.

Two paths. The fast one, for local files on the embedded server: the server reads a chunk
of files itself and casts their lines in one statement (sql_queries.server_read_cast); a large
log file is read in line-aligned ranges, shared among the connections like files. The
COPY path, for everything else (S3, a remote PostgreSQL, a file the server refused): each
log line (each song file) travels as one raw text row through COPY FROM STDIN, escaped for
COPY's text format by a few bytes.replace() calls per block, then one statement casts them.
Several connections share the work, and memory is bounded by the block size.

A record that cannot become a staging row is set aside in load_errors with its file,
line and reason; invalid UTF-8 and NUL bytes are caught here (PostgreSQL text cannot
hold them), everything else by the database. A chunk with any such record takes the
COPY path, which finds them.
"""
import collections
import gzip
import io
import json
import logging
import os
import queue
import re
import stat
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_EXCEPTION
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extras

import db
import sql_queries
from errors import UserError

log = logging.getLogger("sparkify")

BLOCK = 1 << 20              # bytes read from a source at a time: bounds memory per loader
SERVER_READ_MAX = 64 << 20   # the largest song file the server reads (a song file is read whole)
SERVER_CHUNK = 16 << 20      # bytes of files the server reads per statement (at least one file)
SERVER_RANGE = SERVER_CHUNK  # a larger log file is read by the server in line-aligned ranges of about this
NEWLINE_PROBE = 64 << 10     # bytes read at a time to find the line start nearest a range boundary
S3_AHEAD = 8                 # small S3 objects fetched ahead, per connection (they wait on latency)
AHEAD_MAX = 1 << 20          # an S3 object up to this size (as stored) is fetched whole, ahead of its turn
MAX_DEFAULT_WORKERS = 16     # connections per source when [ETL] WORKERS is 0 (at most 32 when set)
GATHER = 256 << 10           # rows smaller than this are sent together
MAX_RECORD = 64 << 20        # a longer line (or song file) is refused
ERRORS_KEPT = 1000           # Python-side bad records kept per shard (all are counted)
BOM = b"\xef\xbb\xbf"
SOURCES = {"song_data": ("songs", "staging_songs"), "log_data": ("events", "staging_events")}


@dataclass(frozen=True, slots=True)  # slots: a 10M load lists 200,000 song files
class SourceFile:
    path: str       # a local path or s3://bucket/key
    size: int       # bytes (of a range: its length)
    start: int = 0  # a range of a large local file (server_ranges): its first byte,
    whole: int = 0  # and the whole file's size; 0: not a range

    @property
    def ends_file(self):
        return not self.whole or self.start + self.size == self.whole


@dataclass
class StagingResult:
    source: str
    files: int = 0
    loaded: int = 0
    rejected: int = 0
    seconds: float = 0.0
    skipped: int = 0      # paths discovery passed over (staging.Found.skipped)
    location: str = ""    # where the files were found: the configured folder or S3 prefix

    @property
    def empty(self):
        """Files, but not one record in them, good or bad."""
        return self.files > 0 and self.loaded == 0 and self.rejected == 0


# --- Finding source files ------------------------------------------------------------------
@dataclass
class Found:
    """A source's files, and every path discovery passed over: hidden files and folders, files
    not named *.json or *.json.gz (any case), a folder or file reached a second time through a link."""
    files: list
    skipped: list


def is_hidden(relative_parts):
    return any(part.startswith(".") for part in relative_parts)


def is_json(name):
    return name.lower().endswith((".json", ".json.gz"))


def is_gzip(name):
    return name.lower().endswith(".gz")


def discover(location, what, s3=None):
    """Every *.json (and *.json.gz) file under location (recursively, following links), skipping
    hidden files and folders; each local file is checked readable here, before anything changes."""
    found = (discover_s3(location, what, s3 or s3_client()) if location.startswith("s3://")
             else discover_local(location, what))
    if not found.files:
        skipped = f" ({plural(len(found.skipped), 'other entry', 'other entries')} skipped)" if found.skipped else ""
        raise UserError(f"{what}: no .json or .json.gz files under {location}{skipped}")
    return found


def select_days(found, location, days, pattern, what):
    """The files (and the skipped paths) of these days only: those whose path under location
    starts with the day written in pattern ([S3] LOG_DATE_PATTERN). A day without a file stops here."""
    base = folder_of(location)
    prefixes = {day: base + day.strftime(pattern) for day in days}

    def of_days(path):
        return any(path.replace(os.sep, "/").startswith(p) for p in prefixes.values())
    files = [f for f in found.files if of_days(f.path)]
    missing = [day for day, p in prefixes.items() if not any(f.path.replace(os.sep, "/").startswith(p) for f in files)]
    if missing:
        shown = ", ".join(str(d) for d in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        which = f"{shown}" if len(days) == 1 else f"{len(missing)} of the {len(days)} days: {shown}"
        raise UserError(f"{what}: no log file for {which} (looked for {prefixes[missing[0]]}*, "
                        f"by [S3] LOG_DATE_PATTERN {pattern})")
    return Found(files, [p for p in found.skipped if of_days(p)])


def folder_of(location):
    """A source location as a folder: its path and a /."""
    return location.replace(os.sep, "/").rstrip("/") + "/"


def plural(n, word, words=None):
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def discover_local(location, what):
    root = Path(location)
    if root.exists() and not root.is_dir():  # a file (or a FIFO, which local_file refuses)
        return Found([local_file(str(root), what, set())], [])
    if not root.is_dir():
        if root.is_symlink():
            raise UserError(f"{what}: broken symbolic link: {location} -> {os.readlink(root)}")
        raise UserError(f"{what}: no such file or directory: {location}")
    files, skipped, seen_files, seen_dirs = [], [], set(), {_identity(os.stat(root), root)}
    inside = os.path.join(os.path.realpath(root), "")

    def alias(path):
        """A link to a file or folder inside the location: read by its own path (--date finds a
        day by its path), not the link's."""
        return os.path.islink(path) and os.path.realpath(path).startswith(inside)
    for folder, dirs, names in os.walk(root, onerror=_raise_walk_error, followlinks=True):
        prefix, kept = os.path.join(folder, ""), []  # the folder and its separator: joined once a folder
        for name in sorted(dirs):
            path = prefix + name
            identity = None if name.startswith(".") or alias(path) else _identity(os.stat(path), path)
            if identity is None or identity in seen_dirs:  # hidden, an alias; a link back up (a cycle) or across
                skipped.append(path + os.sep)
            else:
                seen_dirs.add(identity)
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            path = prefix + name
            if name.startswith(".") or not is_json(name) or alias(path):
                skipped.append(path)
                continue
            f = local_file(path, what, seen_files)
            (files if f else skipped).append(f or path)
    return Found(files, skipped)


def _identity(st, path):
    """A file's device and inode (from its os.stat) as one number (a set of 200,000 pairs held
    25 MB, of numbers 15); an inode takes up to 128 bits (Windows on ReFS). Where the file system
    gives none (0: "unique if non-zero", Python's os.stat_result), the file's real path."""
    return st.st_dev << 128 | st.st_ino if st.st_ino else os.path.realpath(path)


def local_file(path, what, seen):
    """A SourceFile for a local file, checked readable; None if seen before (through a link)."""
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, which Python keeps as surrogates
            raise UserError(f"{what}: {os.fsencode(path).decode('utf-8', 'backslashreplace')}: a name in this path "
                            "is not UTF-8, and the warehouse records each file by its path: rename it")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read below, and the load
            raise UserError(f"{what}: {path} is not a regular file")
        identity = _identity(st, path)
        if identity in seen:
            return None
        seen.add(identity)
        os.close(os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        if os.path.islink(path):
            raise UserError(f"{what}: broken symbolic link: {path} -> {os.readlink(path)}")
        raise UserError(f"{what}: {path} disappeared while the folder was read")
    except OSError as e:
        raise UserError(f"{what}: cannot read {path}: {e.strerror}")
    return SourceFile(path, st.st_size)


def _raise_walk_error(e):
    raise UserError(f"cannot read {e.filename}: {e.strerror}")


def split_s3(uri):
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix


HOW_TO_GIVE_CREDENTIALS = ("set [AWS] KEY and SECRET in the configuration file, or AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY in the environment, or an AWS profile (aws configure)")


def s3_client(cfg=None):
    """An S3 client: the configured key, else boto3's usual chain (environment, profile, role);
    unsigned (anonymous, for a public bucket) when [AWS] ANONYMOUS = true, or when it is not
    set and no credentials are found."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig
    config = BotoConfig(max_pool_connections=32, retries={"max_attempts": 5})
    kwargs = {}
    anonymous = cfg.anonymous if cfg is not None else None
    if cfg is not None:
        if cfg.region:
            kwargs["region_name"] = cfg.region
        if cfg.aws_key and cfg.aws_secret and not anonymous:
            kwargs.update(aws_access_key_id=cfg.aws_key, aws_secret_access_key=cfg.aws_secret)
    session = boto3.session.Session()  # its own: credentials looked up now, not cached by another client
    if anonymous is None and "aws_access_key_id" not in kwargs and session.get_credentials() is None:
        log.info("no AWS credentials found: reading S3 anonymously, as a public bucket allows "
                 "([AWS] ANONYMOUS = false requires credentials)")
        anonymous = True
    elif anonymous:
        log.info("reading S3 anonymously ([AWS] ANONYMOUS = true)")
    if anonymous:
        config = config.merge(BotoConfig(signature_version=UNSIGNED))
    return session.client("s3", config=config, **kwargs)


def is_anonymous(s3):
    from botocore import UNSIGNED
    return s3.meta.config.signature_version is UNSIGNED


def discover_s3(uri, what, s3):
    """The objects under uri as a folder: s3://b/log_data is s3://b/log_data/, never
    s3://b/log_data_old/ (an exact object key is that one file)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    bucket, prefix = split_s3(uri)
    folder = prefix if prefix in ("",) or prefix.endswith("/") else prefix + "/"
    files, skipped = [], []
    try:
        for obj in list_objects(s3, bucket, folder):
            key = obj["Key"]
            if key.endswith("/"):
                continue  # a folder marker, as the console makes
            path = f"s3://{bucket}/{key}"
            if is_hidden(key[len(folder):].split("/")) or not is_json(key):
                skipped.append(path)
            else:
                files.append(SourceFile(path, obj["Size"]))
        if not files and folder != prefix:
            files = [SourceFile(f"s3://{bucket}/{o['Key']}", o["Size"])
                     for o in list_objects(s3, bucket, prefix, max_keys=1) if o["Key"] == prefix]
    except NoCredentialsError:
        raise UserError(f"{what}: cannot list {uri}: no AWS credentials found; {HOW_TO_GIVE_CREDENTIALS}, "
                        "or [AWS] ANONYMOUS = true for a public bucket")
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        reason = {"NoSuchBucket": "no such bucket", "AccessDenied": "access denied",
                  "403": "access denied"}.get(code, code or str(e))
        if reason == "access denied" and is_anonymous(s3):
            reason = f"access denied to an anonymous request (the bucket is not public); {HOW_TO_GIVE_CREDENTIALS}"
        raise UserError(f"{what}: cannot list {uri}: {reason}")
    except BotoCoreError as e:
        raise UserError(f"{what}: cannot list {uri}: {e}")
    return Found(sorted(files, key=lambda f: f.path), skipped)


def list_objects(s3, bucket, prefix, max_keys=None):
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, **({"PaginationConfig": {"MaxItems": max_keys}} if max_keys else {}))
    for page in pages:
        yield from page.get("Contents", [])


def open_source(f, s3):
    """A binary stream with read(n) for a local file or an S3 object; a .gz one decompressed
    as it is read."""
    body = _open_raw(f, s3)
    return Gunzipped(body, f.path) if is_gzip(f.path) else body


class Gunzipped:
    """A gzipped stream decompressed while it is read, a block at a time (never whole in
    memory); a file that is not valid gzip is one clear error naming it."""

    def __init__(self, raw, path):
        self.raw, self.path = raw, path
        self.gz = gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, size=-1):
        try:
            return self.gz.read(size)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{self.path}: not a valid gzip file ({e}); no star table was changed")

    def close(self):
        try:
            self.gz.close()
        finally:
            self.raw.close()


def _open_raw(f, s3):
    if f.path.startswith("s3://"):
        from botocore.exceptions import ClientError
        bucket, key = split_s3(f.path)
        try:
            return S3Body(s3.get_object(Bucket=bucket, Key=key)["Body"], f.path)
        except ClientError as e:
            raise UserError(f"cannot read {f.path}: {e.response.get('Error', {}).get('Code', e)}")
    try:
        body = open(f.path, "rb", buffering=0)  # reads are large (or whole files): no buffer
    except OSError as e:
        raise UserError(f"cannot read {f.path}: {e.strerror}")
    return FileRange(body, f.start, f.size) if f.whole else body


class S3Body:
    """An S3 object's body whose read, if the connection breaks off, is one error naming it (the
    COPY it feeds would say only that a read failed)."""

    def __init__(self, body, path):
        self.body, self.path = body, path

    def read(self, size=-1):
        from botocore.exceptions import BotoCoreError
        try:
            return self.body.read(None if size < 0 else size)
        except (BotoCoreError, OSError) as e:
            raise UserError(f"{self.path}: reading it from S3 failed ({e}); no star table was changed")

    def close(self):
        self.body.close()


class FileRange:
    """read(n) within one range of an open file (a server range that takes the COPY path)."""

    def __init__(self, body, start, size):
        self.body, self.left = body, size
        body.seek(start)

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        data = self.body.read(size) if size else b""
        self.left -= len(data)
        return data

    def close(self):
        self.body.close()


def first_line_of(f):
    """The line a range of a file starts on: one more than the newlines before it."""
    if not f.start:
        return 1
    newlines, left = 0, f.start
    with open(f.path, "rb", buffering=0) as body:
        while left:
            block = body.read(min(BLOCK, left))
            if not block:
                break
            newlines += block.count(b"\n")
            left -= len(block)
    return newlines + 1


# --- The COPY stream -------------------------------------------------------------------------
def copy_escape(block, newlines=False):
    """Bytes as a COPY text-format value: backslash, tab and CR escaped (and LF, for song files)."""
    block = block.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\r", b"\\r")
    return block.replace(b"\n", b"\\n") if newlines else block


def text_problem(data):
    """Why bytes cannot be PostgreSQL text, or None. Fast for clean (and for ASCII) data."""
    if b"\x00" in data:
        return "NUL byte (0x00) in the record"
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"invalid UTF-8 (byte 0x{data[e.start]:02x})"
    return None


def not_text(path, head):
    """A whole file that is not UTF-8 text as its name says, from its first bytes: one error
    naming it, rather than each of its lines set aside as a bad record."""
    if head.startswith(b"\x1f\x8b") and not is_gzip(path):
        raise UserError(f"{path}: gzip-compressed, but its name does not end in .gz: rename it "
                        f"{os.path.basename(path)}.gz; no star table was changed")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{path}: UTF-16 (or UTF-32) text, by its byte-order mark: save it as UTF-8; "
                        "no star table was changed")


_SPACE = re.compile(r"[ \t\r\n]*")


def json_records(data):
    """[(first line, bytes)] of each JSON value in a song file: one (the usual file), or
    several, one a line or concatenated, as Redshift's COPY reads them. Only the boundaries
    are found here; from the first text that does not parse, the rest of the file is one
    record, which the database sets aside with its reason. Bytes that are not text (not UTF-8,
    a NUL) stay in their record, to be set aside alone by the caller."""
    text = data.decode("utf-8", "surrogateescape")
    decoder, records, at, line = json.JSONDecoder(strict=False), [], 0, 1
    while True:
        start = _SPACE.match(text, at).end()
        if start == len(text):
            break
        line += text.count("\n", at, start)
        try:
            _, at = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            at = len(text)
        records.append((line, text[start:at]))
        line += text.count("\n", start, at)
    if len(records) == 1:
        return [(records[0][0], data.strip())]
    return [(n, record.encode("utf-8", "surrogateescape")) for n, record in records]


def opened(files, s3):
    """(file, body to read) for each file, in order. Small S3 objects (song files, a day's small
    log) are fetched whole up to S3_AHEAD ahead, in threads: each waits on the network's round
    trip, not its bandwidth, so one at a time would leave the connection idle. Memory: at most
    S3_AHEAD objects of AHEAD_MAX bytes, as stored (a .gz one is decompressed as it is read).
    The threads share the one client ("low-level clients are thread safe", boto3's guide,
    "Multithreading or multiprocessing with clients", https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html)."""
    def small_s3(f):
        return f.path.startswith("s3://") and f.size <= AHEAD_MAX

    if s3 is None or not any(small_s3(f) for f in files):
        for f in files:
            yield f, open_source(f, s3)
        return

    def fetch(f):
        body = _open_raw(f, s3)
        try:
            return read_whole(body, f.path)
        finally:
            body.close()

    with ThreadPoolExecutor(S3_AHEAD, thread_name_prefix="s3-ahead") as pool:
        todo, pending = iter(files), collections.deque()
        while True:
            while len(pending) < S3_AHEAD and (f := next(todo, None)) is not None:
                pending.append((f, pool.submit(fetch, f) if small_s3(f) else None))
            if not pending:
                return
            f, fetched = pending.popleft()
            if fetched is None:
                yield f, open_source(f, s3)
            else:
                raw = io.BytesIO(fetched.result())
                yield f, Gunzipped(raw, f.path) if is_gzip(f.path) else raw


def read_whole(body, path):
    """All of a song file, in pieces of 64 KiB (a single read(MAX_RECORD) would reserve that much)."""
    parts, size = [], 0
    while piece := body.read(64 << 10):
        parts.append(piece)
        size += len(piece)
        if size > MAX_RECORD:
            raise UserError(f"{path}: a song file is read whole, and this one is larger than "
                            f"{MAX_RECORD >> 20} MiB: split it into smaller files")
    return parts[0] if len(parts) == 1 else b"".join(parts)


class RowStream:
    """The file-like object psycopg2's copy_expert() reads: rows of `file_id<TAB>raw text`.

    One row per log line, or one per song file (whole_files). Records the first row id of
    every file (ids are assigned by the raw table in stream order) so each row can be traced
    to its file and line, and sets aside lines that are not valid text.
    """

    def __init__(self, files, whole_files, s3, run_id, source, progress, cancel):
        self.files, self.whole_files, self.s3 = files, whole_files, s3
        self.run_id, self.source, self.progress, self.cancel = run_id, source, progress, cancel
        self.rows = 0                 # rows sent so far: the raw table's ids are 1..rows
        self.file_rows = []           # (file_id, path, first row id)
        self.errors = []              # load_errors rows found here (at most ERRORS_KEPT)
        self.error_count = 0
        self.failure = None           # a UserError raised while reading (psycopg2 reports only that read failed)
        self._blocks = self._generate()

    def read(self, size=-1):
        if self.cancel.is_set():
            raise KeyboardInterrupt
        # Small rows (one per song file) are gathered into one block: a COPY message per row
        # would cost a round through libpq, and the GIL, per file.
        parts, size = [], 0
        try:
            for piece in self._blocks:
                parts.append(piece)
                size += len(piece)
                if size >= GATHER:
                    break
        except UserError as e:
            self.failure = e
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _generate(self):
        for file_id, (f, body) in enumerate(opened(self.files, self.s3)):
            first_line = first_line_of(f)
            # a row's line in its file: its id - first id + 1 (a range starts further down)
            self.file_rows.append((file_id, f.path, self.rows + 2 - first_line))
            try:
                if self.whole_files:
                    yield from self._whole_file(file_id, f.path, body)
                else:
                    yield from self._lines(file_id, f.path, body, first_line)
            finally:
                body.close()
            if f.ends_file:
                self.progress.file_done()

    def _whole_file(self, file_id, path, body):
        """A song file's records, each a row numbered by the line it starts on (the rows in
        between are empty, so a row's number within its file is that line; records after the
        first on one line take the rows after it)."""
        data = read_whole(body, path)
        data = data.removeprefix(BOM)
        not_text(path, data)
        if not data.strip():
            return  # an empty file is no record and no error
        prefix, row = b"%d\t" % file_id, 1
        for line_no, record in json_records(data):
            problem = text_problem(record)
            if problem:
                self._set_aside(path, record, line_no, problem)
                record = b""
            gap = max(line_no - row, 0)
            self.rows += gap + 1  # the raw table's ids: every later file's lines are found by them
            yield (prefix + b"\n") * gap + prefix + copy_escape(record, newlines=True) + b"\n"
            row = max(row, line_no) + 1

    def _lines(self, file_id, path, body, line_no=1):
        prefix = b"%d\t" % file_id
        carry, first = b"", line_no == 1
        while True:
            chunk = body.read(BLOCK)
            if first:
                chunk, first = chunk.removeprefix(BOM), False
                not_text(path, chunk)
            if not chunk:
                break
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > MAX_RECORD:
                    raise UserError(f"{path}:{line_no}: line longer than {MAX_RECORD >> 20} MiB")
                carry = data
                continue
            block, carry = data[:cut], data[cut + 1:]
            yield self._block(prefix, path, line_no, block)
            line_no += block.count(b"\n") + 1
        if carry:
            yield self._block(prefix, path, line_no, carry)

    def _block(self, prefix, path, line_no, block):
        """COPY rows for complete lines, without a CRLF's CR (a line ending is not part of its
        record); lines that are not valid text are sent empty."""
        block = block.replace(b"\r\n", b"\n").removesuffix(b"\r")
        if text_problem(block):
            lines = block.split(b"\n")
            for i, line in enumerate(lines):
                problem = text_problem(line)
                if problem:
                    self._set_aside(path, line, line_no + i, problem)
                    lines[i] = b""
            block = b"\n".join(lines)
        self.rows += block.count(b"\n") + 1
        return prefix + copy_escape(block).replace(b"\n", b"\n" + prefix) + b"\n"

    def _set_aside(self, path, raw, line_no, reason):
        self.error_count += 1
        if len(self.errors) < ERRORS_KEPT:
            text = raw.decode("utf-8", "replace").replace("\x00", "\\0")  # text holds no NUL
            self.errors.append((self.run_id, self.source, path, line_no, reason, text, len(raw)))


class Progress:
    """Logs files done out of total, at most every few seconds, from any worker thread."""

    def __init__(self, what, total, every=5.0):
        self.what, self.total, self.every = what, total, every
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()
        self.lock = threading.Lock()

    def file_done(self, n=1):
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.every or self.done == self.total:
                self.last = now
                log.info("  %s: %d/%d files, %.1f s", self.what, self.done, self.total, now - self.start)


# --- Loading ---------------------------------------------------------------------------------
def shards(files, n):
    """Split files into n sets of about equal bytes (largest first onto the lightest set)."""
    bins = [[0, []] for _ in range(max(1, min(n, len(files))))]
    for f in sorted(files, key=lambda f: -f.size):
        lightest = min(bins, key=lambda b: b[0])
        lightest[0] += f.size
        lightest[1].append(f)
    return [sorted(b[1], key=lambda f: f.path) for b in bins]


def worker_count(cfg):
    """Connections per source (songs and logs load at once): two per core, while one streams
    its files another casts its rows; by default at most MAX_DEFAULT_WORKERS, so that both
    sources and the transform stay within a server's usual 100 connections."""
    return cfg.workers or min(2 * (os.cpu_count() or 1), MAX_DEFAULT_WORKERS)


def load_source(cfg, source, files, run_id, s3=None, workers=None, cancel=None):
    """Load files into their staging table over several connections; return a StagingResult.
    cancel: an Event that stops it (set when it fails, or by the caller).

    Files the embedded server reads itself wait in one queue of chunks that every connection
    takes from until it is empty, so that all finish together; the others are split between
    the connections by size, for the COPY path.
    """
    what, table = SOURCES[source]
    started = time.monotonic()
    on_server, streamed = [], []
    whole_files = source == "song_data"
    for f in files:
        if server_readable(cfg, f, whole_files):
            on_server += [f] if whole_files else server_ranges(f)
        else:
            streamed.append(f)
    todo = queue.SimpleQueue()
    for chunk in chunks(sorted(on_server, key=lambda f: -f.size)):
        todo.put(chunk)
    n = max(1, min(workers or worker_count(cfg), todo.qsize() + len(streamed)))
    parts = shards(streamed, n) if streamed else []
    parts += [[] for _ in range(n - len(parts))]
    progress = Progress(f"staging {what}", len(files))
    cancel = threading.Event() if cancel is None else cancel  # set: stop (this source failed, or another)
    connections = []
    result = StagingResult(source, files=len(files), location=getattr(cfg, source))
    with ThreadPoolExecutor(n, thread_name_prefix=f"stage-{what}") as pool:
        futures = [pool.submit(load_shard, cfg, source, todo, part, run_id, s3, progress, cancel, connections)
                   for part in parts]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception():
                    raise fut.exception()
        except BaseException:
            cancel.set()
            for conn in list(connections):
                _cancel_quietly(conn)
            raise
    for fut in futures:
        loaded, rejected = fut.result()
        result.loaded += loaded
        result.rejected += rejected
    result.seconds = time.monotonic() - started
    return result


def _cancel_quietly(conn):
    try:
        conn.cancel()
    except Exception:
        pass


def load_shard(cfg, source, todo, files, run_id, s3, progress, cancel, connections):
    """One connection's share of a source into staging, bad records set aside: chunks from the
    todo queue read by the server, then its files for the COPY path; (loaded, rejected)."""
    conn = db.connect(cfg)
    connections.append(conn)
    try:
        with conn.cursor() as cur:
            for setting in sql_queries.staging_settings:
                cur.execute(setting)
            loaded, refused = read_on_server(cur, source, todo, progress, cancel)
            rejected, rest = 0, files + refused
            if rest:
                streamed, rejected = stream_files(cur, source, rest, run_id, s3, progress, cancel)
                loaded += streamed
        conn.commit()
        return loaded, rejected
    finally:
        conn.close()


def server_readable(cfg, f, whole_files):
    """The embedded server reads plain local files itself; pg_read_file cannot gunzip, so a
    .gz file takes the COPY path (decompressed here, as it is streamed). A log file of any size
    (server_ranges); a song file (one read, one record) up to SERVER_READ_MAX."""
    return (cfg.embedded and not f.path.startswith("s3://") and not is_gzip(f.path)
            and (not whole_files or f.size <= SERVER_READ_MAX))


def server_ranges(f, size=None):
    """A log file as line-aligned ranges of about SERVER_RANGE bytes (the file itself if it is
    smaller): each boundary moved to the start of the line it falls in, found by a short read."""
    size = size or SERVER_RANGE
    if f.size <= size:
        return [f]
    starts = [0]
    with open(f.path, "rb") as body:
        while starts[-1] + size < f.size:
            body.seek(starts[-1] + size)
            skipped = 0
            while True:
                probe = body.read(NEWLINE_PROBE)
                cut = probe.find(b"\n")
                if cut >= 0 or not probe:
                    break
                skipped += len(probe)
            if cut < 0:  # no newline after this point: the rest is one range
                break
            starts.append(starts[-1] + size + skipped + cut + 1)
    starts = [s for s in starts if s < f.size]
    ends = starts[1:] + [f.size]
    return [SourceFile(f.path, end - start, start, f.size) for start, end in zip(starts, ends)]


def chunks(files, max_bytes=None, max_files=1000):
    max_bytes = max_bytes or SERVER_CHUNK
    chunk, size = [], 0
    for f in files:
        if chunk and (size + f.size > max_bytes or len(chunk) == max_files):
            yield chunk
            chunk, size = [], 0
        chunk.append(f)
        size += f.size
    if chunk:
        yield chunk


# A record or a file the server-side read cannot take: those files take the COPY path instead.
# A cast that fails on a record: bad data or a missing field, or JSON nested deeper than the
# server's stack (sql_queries.JSON_BRACKETS_MAX); staging_rejects() then says which and why.
BAD_RECORD = (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.errors.StatementTooComplex)
SERVER_READ_REFUSED = BAD_RECORD + (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.UndefinedFile)


def read_on_server(cur, source, todo, progress, cancel):
    """The embedded server reads local files itself, a chunk from the todo queue per statement
    (the fast path, see sql_queries.server_read_cast), until the queue is empty. Returns (rows
    loaded, files of the chunks it refused: they take the COPY path)."""
    table = SOURCES[source][1]
    cast = sql_queries.server_read_cast(table)
    loaded, read, refused, started = 0, 0, [], time.monotonic()
    while True:
        if cancel.is_set():
            raise KeyboardInterrupt
        try:
            chunk = todo.get_nowait()
        except queue.Empty:
            break
        cur.execute("SAVEPOINT server_read")
        try:
            cur.execute(cast, {"paths": [os.path.abspath(f.path) for f in chunk],
                               "starts": [f.start for f in chunk], "sizes": [f.size for f in chunk]})
        except SERVER_READ_REFUSED as e:
            cur.execute("ROLLBACK TO SAVEPOINT server_read")
            log.debug("%s: the server did not read %d files from %s (%s); COPY path for them", table,
                      len(chunk), chunk[0].path, str(e).splitlines()[0])
            refused += chunk
            continue
        loaded += cur.rowcount
        read += len(chunk)
        progress.file_done(sum(f.ends_file for f in chunk))
    if read:
        log.debug("%s: server-side read of %d files or ranges, %d rows, %.2f s", table, read, loaded,
                  time.monotonic() - started)
    return loaded, refused


def stream_files(cur, source, files, run_id, s3, progress, cancel):
    """The COPY path: raw rows streamed to a temp table, cast to staging, bad records set
    aside in load_errors with file and line; (loaded, rejected)."""
    what, table = SOURCES[source]
    raw = f"raw_{what}"
    q = {name: getattr(sql_queries, name).format(raw=raw)
         for name in ("raw_table_create", "raw_files_create", "rejects_create", "raw_copy",
                      "raw_files_insert", "rejects_to_load_errors", "count_rejects")}
    for name in ("raw_table_create", "raw_files_create", "rejects_create"):
        cur.execute(q[name])
    stream = RowStream(files, source == "song_data", s3, run_id, source, progress, cancel)
    started = time.monotonic()
    try:
        cur.copy_expert(q["raw_copy"], stream, size=BLOCK)
    except psycopg2.Error:
        if stream.failure:  # psycopg2 says only "error in .read() call": the reason is ours
            raise stream.failure
        raise
    copied = time.monotonic()
    psycopg2.extras.execute_values(cur, q["raw_files_insert"], stream.file_rows)
    loaded = cast_to_staging(cur, table, raw)
    log.debug("%s: COPY path for %d files, %d rows: COPY %.2f s, cast %.2f s", table, len(files),
              stream.rows, copied - started, time.monotonic() - copied)
    cur.execute(q["rejects_to_load_errors"], {"run_id": run_id, "source": source})
    if stream.errors:
        psycopg2.extras.execute_values(cur, sql_queries.load_errors_insert, stream.errors)
    cur.execute(q["count_rejects"])
    return loaded, cur.fetchone()[0] + stream.error_count


def cast_to_staging(cur, table, raw):
    """Typed rows from the raw rows. Fast path first; if any record fails, find every bad one,
    set them aside, and cast the rest."""
    cast = sql_queries.staging_cast(table, raw)
    cur.execute("SAVEPOINT staging_cast")
    try:
        cur.execute(cast)
        return cur.rowcount
    except BAD_RECORD:
        cur.execute("ROLLBACK TO SAVEPOINT staging_cast")
    cur.execute(sql_queries.staging_rejects(table, raw))
    try:
        cur.execute(cast)
    except BAD_RECORD as e:
        raise UserError(f"{table}: a record failed that the checks did not catch: "
                        f"{str(e).splitlines()[0]}")
    return cur.rowcount


# --- Redshift: the COPYs that load exactly the files found -----------------------------------
def copy_plan(cfg, sources, run_id, days=None):
    """The Redshift COPYs that load exactly the files discovery found (the files a PostgreSQL
    load reads), and the manifests they need first: ([sql_queries.CopyFrom], {uri: manifest}).

    A COPY FROM a key prefix reads every key that starts with it, and GZIP applies to every file
    of a COPY (tests/redshift_rules.py). So each folder, or each day's key prefix in a daily
    load, is one COPY when its files are all plain or all gzipped (GZIP then) and no other key
    starts with it; else one COPY per kind, from a manifest listing its files, written under
    [S3] MANIFEST_PREFIX (outside the sources: nothing is written to them).
    """
    copies, manifests = [], {}
    for source, found in sources.items():
        location, what = getattr(cfg, source), f"[S3] {source.upper()}"
        for label, prefix in copy_prefixes(location, found, days if source == "log_data" else None,
                                           cfg.log_date_pattern):
            files = [f for f in found.files if f.path.startswith(prefix)]
            others = [p for p in found.skipped if p.startswith(prefix) and not p.endswith("/")]
            kinds = {gz: [f for f in files if is_gzip(f.path) == gz] for gz in (False, True)}
            kinds = {gz: fs for gz, fs in kinds.items() if fs}
            if len(kinds) == 1 and not others:
                copies.append(sql_queries.CopyFrom(source, prefix, gzip=True in kinds))
                continue
            if not cfg.manifest_prefix:
                why = (f"would also read {others[0]} (not a .json or .json.gz file)" if others else
                       f"holds both .json and .json.gz files (e.g. {kinds[True][0].path}), and GZIP applies "
                       "to a whole COPY")
                raise UserError(f"{what}: a Redshift COPY from {prefix} {why}; set [S3] MANIFEST_PREFIX to an "
                                "s3:// folder outside the sources, where etl.py writes a manifest of each kind")
            for gz, kind in kinds.items():
                uri = (f"{cfg.manifest_prefix.rstrip('/')}/{run_id}/"
                       f"{source}-{label}-{'gzip' if gz else 'plain'}.manifest")
                manifests[uri] = {"entries": [{"url": f.path, "mandatory": True} for f in kind]}
                copies.append(sql_queries.CopyFrom(source, uri, gzip=gz, manifest=True))
    return copies, manifests


def copy_prefixes(location, found, days, pattern):
    """[(label, S3 key prefix)] a source's COPYs read: each day's (a file-name prefix, derived
    from [S3] LOG_DATE_PATTERN), else the folder (and a /), or the one object configured."""
    if [f.path for f in found.files] == [location]:
        return [("file", location)]
    if days:
        return [(day.isoformat(), folder_of(location) + day.strftime(pattern)) for day in days]
    return [("all", folder_of(location))]


def write_manifests(s3, manifests):
    """Each manifest as an S3 object (the caller's credentials write it; the cluster's role reads it)."""
    from botocore.exceptions import BotoCoreError, ClientError
    for uri, manifest in manifests.items():
        bucket, key = split_s3(uri)
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=1).encode(),
                          ContentType="application/json")
        except ClientError as e:
            raise UserError(f"[S3] MANIFEST_PREFIX: cannot write {uri}: {e.response.get('Error', {}).get('Code', e)}")
        except BotoCoreError as e:
            raise UserError(f"[S3] MANIFEST_PREFIX: cannot write {uri}: {e}")
        log.info("wrote manifest %s (%s)", uri, plural(len(manifest["entries"]), "file"))
