"""A console's whole history across members as one download, streamed.

Every member sends its whole log of the console, oldest file first
(`GET /api/cluster/peer/logs/NAME?whole=1`, member secret), and the asking member merges
the streams as `merge.merge_logs` merges whole logs, one piece at a time: each member's
pieces come in epoch order in its file, so the next piece of the history is always the
current piece of the member whose epoch is lowest. Only about one chunk per member is
held, so a history of gigabytes costs no more memory than one of kilobytes.

A member that does not answer is named in `X-Solgate-Missing` and in a note at the end
of the download; a member whose stream breaks is named in a note at the end too. The
download never ends quietly short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import quote

import aiohttp
from aiohttp import web

from solgate.console.epochs import OWNS
from solgate.console.logread import iter_log_files

CHUNK = 1 << 16
KEEP = 1024  # bytes held back at a chunk's end: longer than any ownership note


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The bytes of one console log, oldest rotated file first. Every file is opened
    before the first read, so a rotation during the download shifts no names under it."""

    def open_all() -> list[IO[bytes]]:
        opened: list[IO[bytes]] = []
        for file in iter_log_files(path):
            with contextlib.suppress(OSError):
                opened.append(open(file, "rb"))  # noqa: SIM115 - closed below
        return opened

    files = await asyncio.to_thread(open_all)
    try:
        for f in files:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
    finally:
        for f in files:
            f.close()


async def stream_whole_log(request: web.Request, path: Path) -> web.StreamResponse:
    """A member's answer to `?whole=1`: its whole log of the console, streamed."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    async for chunk in file_chunks(path):
        await response.write(chunk)
    await response.write_eof()
    return response


class _Source:
    """One member's log as it streams in: the piece it is in, and its next bytes."""

    def __init__(self, member: str, chunks: AsyncIterator[bytes]) -> None:
        self.member = member
        self.chunks = chunks
        self.buf = b""
        self.epoch = 0
        self.eof = False
        self.broken = False

    async def fill(self) -> None:
        try:
            chunk = await anext(self.chunks, None)
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            self.broken, chunk = True, None
        if chunk is None:
            self.eof = True
        else:
            self.buf += chunk

    async def start(self) -> bool:
        """Read enough to know the epoch the log starts in; False when it is empty."""
        while not self.eof and len(self.buf) < KEEP:
            await self.fill()
        m = OWNS.match(self.buf)
        self.epoch = int(m.group("epoch")) if m else 0
        return bool(self.buf)

    async def take(self) -> tuple[bytes, int | None]:
        """The piece's next bytes, and the epoch of the next piece once its note is
        reached (None: more of this piece may follow, or the log ended)."""
        while True:
            # From 1: `buf` starts with the note of the piece being taken, or with bytes
            # no note starts at (a note that fits in what is held back matched before).
            m = OWNS.search(self.buf, 1)
            if m is not None:
                out, self.buf = self.buf[:m.start()], self.buf[m.start():]
                return out, int(m.group("epoch"))
            if self.eof:
                out, self.buf = self.buf, b""
                return out, None
            if len(self.buf) > KEEP:  # a note cut by a chunk boundary stays in the rest
                out, self.buf = self.buf[:-KEEP], self.buf[-KEEP:]
                return out, None
            await self.fill()


async def merge_streams(streams: Mapping[str, AsyncIterator[bytes]],
                        broken: list[str]) -> AsyncIterator[bytes]:
    """Every member's whole log (member -> its bytes, streamed) as one history, the
    same bytes `merge_logs` gives for the whole logs; members whose stream broke are
    added to `broken`."""
    sources: list[_Source] = []
    for member, chunks in sorted(streams.items()):
        source = _Source(member, chunks)
        if await source.start():
            sources.append(source)
        elif source.broken:
            broken.append(member)
    ends_line = True
    while sources:
        source = min(sources, key=lambda s: (s.epoch, s.member))
        if not ends_line:
            yield b"\r\n"  # a member's piece may end mid-line (it stopped there)
        while True:
            data, following = await source.take()
            if data:
                yield data
                ends_line = data.endswith(b"\n")
            if following is not None:  # the next piece: it waits its turn
                source.epoch = following
                break
            if source.eof and not source.buf:
                sources.remove(source)
                if source.broken:
                    broken.append(source.member)
                break


async def download_history(request: web.Request, local: str, path: Path,
                           peers: Mapping[str, str], secret: str,
                           console: str) -> web.StreamResponse:
    """`GET /api/cluster/history/NAME?whole=1`: this member's whole log of `console` and
    every other live member's (`peers`: name -> advertise URL), merged and streamed."""
    from solgate.cluster.peer import SECRET_HEADER

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout,
                                     headers={SECRET_HEADER: secret}) as http:
        async def open_one(url: str) -> aiohttp.ClientResponse | None:
            where = f"{url.rstrip('/')}/api/cluster/peer/logs/{quote(console, safe='')}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                resp = await http.get(where, params={"whole": "1"}, allow_redirects=False)
                if resp.status == 200:
                    return resp
                resp.release()
            return None

        answers = dict(zip(peers, await asyncio.gather(*(open_one(u) for u in peers.values())),
                           strict=True))
        missing = sorted(m for m, r in answers.items() if r is None)
        streams: dict[str, AsyncIterator[bytes]] = {local: file_chunks(path)}
        for member, resp in answers.items():
            if resp is not None:
                streams[member] = resp.content.iter_chunked(CHUNK)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{console}-history.log"',
            "X-Solgate-Members": ",".join(sorted(streams)),
            "X-Solgate-Missing": ",".join(missing)})
        await response.prepare(request)
        broken: list[str] = []
        out = bytearray()
        last = b"\n"
        try:
            async for data in merge_streams(streams, broken):
                out += data
                last = data[-1:] or last
                if len(out) >= CHUNK:
                    await response.write(bytes(out))
                    out.clear()
            notes = [f"member {m} did not answer: its part of {console}'s history is "
                     "missing from this download" for m in missing]
            notes += [f"the connection to member {m} broke: the rest of its part of "
                      f"{console}'s history is missing from this download" for m in broken]
            if notes and last != b"\n":
                out += b"\r\n"
            out += b"".join(f"[-- solgate: {n} --]\r\n".encode() for n in notes)
            await response.write(bytes(out))
        finally:
            for resp in answers.values():
                if resp is not None:
                    resp.close()
        await response.write_eof()
        return response
