"""The photo an OpenAI `image_url` names, as `ase-mllm serve` reads it.

- a base64 `data:` URL: always;
- a local path or `file://` URL: only a regular file under the operator's folders (`photos.LocalFiles`);
- an http(s) URL: only with `--allow-remote-images`, through `RemoteImages`: every connection, redirects included,
  goes to an address checked after resolving the host (loopback, private, link-local, multicast and reserved
  addresses are refused unless the operator allows them), within a total deadline per image and a limit on
  connections at once; an error says "refused" or "could not be fetched", never why in the network's terms.

`ImageSources.check` looks at a url's text only (scheme, size of a data URL, whether its kind is allowed), so that
a request is refused before anything is read; `fetch` brings a remote image's bytes (on the event loop, without a
thread); `read` gives the bytes of any url (a local file is read there), which `photos.read_photo` decodes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import unquote, urljoin, urlparse

import httpcore

from .photos import LocalFiles, PhotoError, PhotoLimits


REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
USER_AGENT = "ase-mllm-serve"


def url_kind(url: str) -> str:
    """"data", "remote" (http/https), "local" (a path or `file://` URL), or a `PhotoError` for another scheme."""
    if url.startswith("data:"):
        return "data"
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return "remote"
    if scheme == "file" or len(scheme) <= 1:  # no scheme: a path (one letter would be a Windows drive)
        return "local"
    raise PhotoError(f"unsupported URL scheme {scheme!r}: use a data URL")


def local_path(url: str) -> str:
    """The path a local `image_url` names (a `file://` URL's path, unquoted)."""
    parsed = urlparse(url)
    if parsed.scheme.lower() != "file":
        return url
    if parsed.netloc not in ("", "localhost"):
        raise PhotoError(f"a file URL names a file on this server, not on {parsed.netloc!r}")
    return unquote(parsed.path)


class ImageSources:
    """Where `ase-mllm serve` may take a photo from (see the module docstring).

    Args:
        limits: each image's bounds (`--max-file-mb` bounds bytes here; pixels are `read_photo`'s).
        local_files: the folders clients may name files under (`--allowed-local-media-path`).
        remote: the fetcher of http(s) images (`--allow-remote-images`), or None: remote URLs are refused.
    """

    def __init__(self, limits: PhotoLimits, local_files: LocalFiles = LocalFiles(), remote: RemoteImages | None = None):
        self.limits, self.local_files, self.remote = limits, local_files, remote

    def check(self, url: str) -> None:
        """Refuse a url this server will not read (`PhotoError`), from its text alone."""
        kind = url_kind(url)
        if kind == "data":
            header, comma, payload = url.partition(",")
            if not comma or not header.endswith(";base64"):
                raise PhotoError("a data URL must hold base64: data:image/jpeg;base64,...")
            if len(payload) * 3 // 4 > self.limits.max_bytes + 2:
                raise PhotoError(f"the data URL holds about {len(payload) * 3 / 4e6:.1f} MB, over the limit of "
                                 f"{self.limits.max_file_mb:g} MB (--max-file-mb raises it)")
        elif kind == "remote" and self.remote is None:
            raise PhotoError("this server does not fetch remote images (its operator can allow them with "
                             "--allow-remote-images); send the image as a data URL")
        elif kind == "local":
            path = local_path(url)
            if not self.local_files.roots:
                raise self.local_files.refusal(path)

    async def fetch(self, url: str) -> bytes | None:
        """The bytes of a remote image (None for other kinds, which `read` reads)."""
        return await self.remote.fetch(url) if url_kind(url) == "remote" else None

    def read(self, url: str, fetched: bytes | None = None) -> bytes:
        """The bytes `url` names: a data URL decoded, a local file read, or what `fetch` brought."""
        kind = url_kind(url)
        if kind == "remote":
            return fetched
        if kind == "local":
            return self.local_files.read(local_path(url), self.limits)
        try:
            return base64.b64decode(url.partition(",")[2], validate=True)
        except (binascii.Error, ValueError) as error:
            raise PhotoError(f"the data URL's base64 is corrupt: {error}") from None


# ---------------------------------------------------------------------------------------------------- remote images
class RefusedAddress(Exception):
    """A connection to an address the server does not fetch from."""


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is globally routable: not loopback, private, link-local, shared, reserved or multicast (an
    IPv6 address that carries an IPv4 one is judged by the IPv4 one)."""
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_global and not address.is_multicast


class CheckedAddresses(httpcore.AnyIOBackend):
    """httpcore's network backend, resolving each host itself and connecting only to addresses `allowed` accepts.

    The address checked is the address connected to (no second lookup a DNS answer could change in between), and
    every connection goes through here, so each redirect hop is checked too. A host with any refused address is
    refused. TLS still names the host (httpcore passes it as the server name).
    """

    def __init__(self, allowed):
        self.allowed = allowed

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))
        if not addresses or not all(self.allowed(address) for address in addresses):
            raise RefusedAddress(host)
        error = None
        for address in addresses:
            try:
                return await super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:
                error = failed
        raise error


class RemoteImages:
    """Fetches http(s) images for the server, bounded in bytes, time, connections and addresses.

    Args:
        max_bytes: the most one image may hold (`--max-file-mb`).
        timeout_s: total time for one image, every redirect hop included (`--image-fetch-timeout`).
        max_connections: fetches at once, all requests together (`--image-fetch-connections`); a fetch that
            finds them all busy waits within its own deadline.
        private_networks: None refuses every non-public address; a list of networks (`ipaddress` objects or
            strings) allows those too; `"all"` allows every address (`--allow-private-image-urls`).
    """

    def __init__(self, max_bytes: int, timeout_s: float = 10.0, max_connections: int = 4, private_networks=None):
        self.max_bytes, self.timeout_s = max_bytes, timeout_s
        if private_networks == "all":
            self.networks = None
        else:
            self.networks = [ipaddress.ip_network(network) for network in private_networks or []]
        self.pool = httpcore.AsyncConnectionPool(max_connections=max_connections, retries=0,
                                                 network_backend=CheckedAddresses(self.allowed))

    def allowed(self, address) -> bool:
        if self.networks is None or is_public_address(address):
            return True
        return any(address in network for network in self.networks)

    async def fetch(self, url: str) -> bytes:
        """The body of `url` (redirects followed), or `PhotoError`: refused, over the size bound, or could not be
        fetched (anything else: a refused connection, a status other than 200, a timeout, a broken answer)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url)
        except RefusedAddress:
            raise PhotoError(f"image {url!r} refused: this server fetches images from public addresses only") from None
        except PhotoError:
            raise
        except (TimeoutError, httpcore.TimeoutException):
            raise PhotoError(f"image {url!r} could not be fetched within {self.timeout_s:g} s") from None
        except Exception:  # whatever the network said, a client learns only that it failed
            raise PhotoError(f"image {url!r} could not be fetched") from None

    async def _fetch(self, url: str) -> bytes:
        asked = url  # messages name what the client asked for, not where it was redirected
        for _ in range(MAX_REDIRECTS + 1):
            if urlparse(url).scheme.lower() not in ("http", "https"):
                raise httpcore.UnsupportedProtocol(url)
            headers = [(b"User-Agent", USER_AGENT.encode()), (b"Accept", b"image/*")]
            async with self.pool.stream("GET", url, headers=headers) as response:
                if response.status in REDIRECT_STATUSES:
                    location = dict((k.lower(), v) for k, v in response.headers).get(b"location")
                    if location is None:
                        raise httpcore.RemoteProtocolError("a redirect without a location")
                    url = urljoin(url, location.decode("latin-1"))
                    continue
                if response.status != 200:
                    raise httpcore.RemoteProtocolError(f"status {response.status}")
                chunks, size = [], 0
                async for chunk in response.aiter_stream():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PhotoError(f"image {asked!r} could not be fetched: it is over the limit of "
                                         f"{self.max_bytes / 1e6:g} MB (--max-file-mb raises it)")
                    chunks.append(chunk)
                return b"".join(chunks)
        raise httpcore.RemoteProtocolError("too many redirects")

    async def aclose(self) -> None:
        await self.pool.aclose()


__all__ = ["ImageSources", "RemoteImages", "is_public_address", "local_path", "url_kind"]
