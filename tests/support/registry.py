"""A registry for pull tests: the Docker Registry HTTP API v2, read-only, plain HTTP on
loopback (the engine treats 127.0.0.0/8 as insecure, so it pulls from it without TLS),
serving one image made from a local one plus a fresh layer of random bytes, whose blob
is sent at a bounded rate so that a pull lasts as long as a test needs."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import secrets
import socket
import subprocess
import tarfile
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHUNK = 16 * 1024
SAVE_TIMEOUT_S = 60


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fresh_layer(size: int) -> bytes:
    """An uncompressed layer no engine holds yet: one file of random bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(f"pull-test-{secrets.token_hex(8)}")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


@dataclass
class FakeRegistry:
    """``async with FakeRegistry("virtbus-test:latest") as registry``: pull
    ``registry.image``. Blobs go out at ``rate`` bytes per second; ``requests`` lists
    what the engine asked for."""

    base: str
    layer_bytes: int = 2 * 1024 * 1024
    rate: int = 512 * 1024
    repository: str = field(default_factory=lambda: f"virtbus/pull-{secrets.token_hex(4)}")
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._manifest = b""
        self._fresh = ""
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def image(self) -> str:
        return f"{self.address}/{self.repository}:1"

    @property
    def fresh_bytes(self) -> int:
        """The compressed size of the layer that the engine has to download."""
        return len(self._blobs[self._fresh])

    def _build(self) -> None:
        saved = subprocess.run(
            ["docker", "save", self.base], capture_output=True, check=True, timeout=SAVE_TIMEOUT_S
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(saved)) as tar:

            def read(name: str) -> bytes:
                member = tar.extractfile(name)
                assert member is not None
                return member.read()

            (entry,) = json.loads(read("manifest.json"))
            config = json.loads(read(entry["Config"]))
            layers = [read(name) for name in entry["Layers"]]
        fresh = _fresh_layer(self.layer_bytes)
        layers.append(fresh)
        config["rootfs"]["diff_ids"].append(_digest(fresh))
        config.setdefault("history", []).append({"created_by": "virtbus pull test layer"})
        config_blob = json.dumps(config).encode()
        self._blobs[_digest(config_blob)] = config_blob
        described = []
        for layer in layers:
            blob = gzip.compress(layer, mtime=0)
            self._blobs[_digest(blob)] = blob
            described.append({"mediaType": LAYER_TYPE, "size": len(blob), "digest": _digest(blob)})
        self._fresh = _digest(gzip.compress(fresh, mtime=0))
        self._manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": CONFIG_TYPE,
                    "size": len(config_blob),
                    "digest": _digest(config_blob),
                },
                "layers": described,
            }
        ).encode()

    async def _ping(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def _manifest_of(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        reference = request.match_info["ref"]
        if request.match_info["name"] != self.repository or reference not in (
            "1",
            _digest(self._manifest),
        ):
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                status=404,
            )
        headers = {"Docker-Content-Digest": _digest(self._manifest)}
        # aiohttp leaves the body out of the answer to a HEAD
        return web.Response(body=self._manifest, content_type=MANIFEST_TYPE, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        blob = self._blobs.get(request.match_info["digest"])
        if blob is None or request.match_info["name"] != self.repository:
            return web.json_response(
                {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status=404
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": request.match_info["digest"],
            }
        )
        response.content_length = len(blob)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        for start in range(0, len(blob), CHUNK):
            await response.write(blob[start : start + CHUNK])
            # the throttle: this is the registry's pace, not a test waiting for something
            await asyncio.sleep(CHUNK / self.rate)
        await response.write_eof()
        return response

    async def __aenter__(self) -> FakeRegistry:
        await asyncio.to_thread(self._build)
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/v2/{name:.+}/manifests/{ref}", self._manifest_of)
        app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", self._blob)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        listening = socket.create_server(("127.0.0.1", 0))
        self.port = listening.getsockname()[1]
        await web.SockSite(self._runner, listening).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
