"""A TCP proxy on loopback that can cut the line: while cut, bytes stop flowing both ways,
a peer's close does not get through, and new connections hang, as behind a firewall
that drops packets (no reset)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopped = False
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.dialled = asyncio.Event()
        """Set when a connection is opened while the line is cut: its client has given up
        on the connections it had."""
        self.port = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, heartbeat_s: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/?heartbeat={heartbeat_s}"

    def cut(self) -> None:
        self.dialled.clear()
        self._flowing.clear()

    def restore(self) -> None:
        """Let bytes flow again; the connections that lived through the cut are dropped,
        as their peers gave up on them."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        self._flowing.set()

    async def stop(self) -> None:
        self._stopped = True
        if self._server is not None:
            self._server.close()
        self.restore()
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._flowing.is_set():
            self.dialled.set()
        await self._flowing.wait()
        if self._stopped:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self._target_port
            )
        except OSError:
            writer.close()
            return
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                await self._flowing.wait()
                if sink.is_closing():
                    return
                sink.write(data)
                await sink.drain()
        await self._flowing.wait()
        sink.close()
