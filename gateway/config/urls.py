"""The Redis URL's cluster form, ``redis+cluster://[user:password@]host:port,host:port,...``."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["cluster_nodes"]


def cluster_nodes(url: str) -> list[str]:
    """One plain URL per node a cluster URL names, with its credentials and options.

    ``redis+cluster://u:p@a:1,b:2/?ssl_cert_reqs=none`` gives ``redis://u:p@a:1/?...``
    and ``redis://u:p@b:2/?...``; a ``redis://`` URL (``redis.cluster: true``) gives
    itself. Raises ValueError naming what is wrong (a missing port, a database other
    than 0: a cluster has only database 0).
    """
    scheme, _, rest = url.partition("://")
    plain = scheme.removesuffix("+cluster")
    if plain not in ("redis", "rediss"):
        raise ValueError("a cluster URL starts with redis+cluster:// or rediss+cluster://")
    netloc, _, tail = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    nodes = []
    for host in hosts.split(","):
        parsed = urlsplit(f"{plain}://{host}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise ValueError(f"{host!r} is not host:port")
        nodes.append(f"{plain}://{credentials}{at}{host}/{'?' + query if query else ''}")
    return nodes
