"""The etcd client against a real etcd: the calls the cluster relies on, and failover."""

from __future__ import annotations

import socket
import time

import pytest
from aiohttp import web

from solgate.cluster.etcd import (
    EtcdClient,
    EtcdUnavailable,
    cmp_absent,
    cmp_create_revision,
    op_delete,
    op_get,
    op_put,
)
from tests.cluster_helpers import Etcd, free_port
from tests.cluster_helpers import etcd_server as etcd_server  # the `etcd` fixture

pytestmark = pytest.mark.timeout(60)


async def test_lease_txn_and_range_as_the_cluster_uses_them(etcd: Etcd) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, etcd.url], timeout=2.0) as client:
        lease = await client.grant(5)  # the dead endpoint is skipped
        assert client.endpoint == etcd.url
        assert lease.ttl == 5
        assert await client.keepalive(lease.id) == 5
        assert 0 < await client.time_to_live(lease.id) <= 5

        key = "/client-test/owners/web01"
        first = await client.txn([cmp_absent(key)], [op_put(key, b"a", lease.id)], [op_get(key)])
        assert first.succeeded
        again = await client.txn([cmp_absent(key)], [op_put(key, b"b", lease.id)], [op_get(key)])
        assert not again.succeeded
        (kv,) = again.kvs
        assert (kv.value, kv.lease, kv.create_revision) == (b"a", lease.id, first.revision)

        other = "/client-test/owners/web02"
        await client.put(other, b"x")
        kvs, revision = await client.range("/client-test/owners/", prefix=True)
        assert [k.key for k in kvs] == [key, other]
        await client.delete(other)
        before, _ = await client.range("/client-test/owners/", prefix=True, revision=revision)
        assert len(before) == 2  # as of the earlier revision

        # A handover deletes only the epoch it owns.
        stale = await client.txn([cmp_create_revision(key, first.revision + 100)],
                                 [op_delete(key)])
        assert not stale.succeeded
        done = await client.txn([cmp_create_revision(key, first.revision)], [op_delete(key)])
        assert done.succeeded
        assert await client.get(key) is None

        await client.revoke(lease.id)
        await client.revoke(lease.id)  # already gone: not an error
        assert await client.keepalive(lease.id) == 0  # etcd no longer knows it


async def test_no_endpoint_answers_is_one_error_naming_them() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with EtcdClient(urls, timeout=1.0) as client:
        with pytest.raises(EtcdUnavailable) as info:
            await client.grant(5)
    message = str(info.value)
    assert message.startswith(f"etcd unreachable at {urls[0]}, {urls[1]} (connection refused)")
    assert "check [cluster] etcd" in message


async def test_a_renewal_hedges_past_a_silent_node(etcd: Etcd) -> None:
    """A node that accepts connections and never answers (power loss, a stalled disk)
    costs a renewal `hedge_after`, not the call timeout: the member's fencing margin."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody reads or answers
        dead = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with EtcdClient([etcd.url]) as granter:
            lease = await granter.grant(10)
        async with EtcdClient([dead, etcd.url], timeout=5.0) as client:
            started = time.monotonic()
            assert await client.keepalive(lease.id, hedge_after=0.2) == 10
            assert time.monotonic() - started < 2.0
            assert client.endpoint == etcd.url  # and the next renewal goes there
            await client.revoke(lease.id)
        async with EtcdClient([dead, dead], timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable, match="timed out"):
                await client.keepalive(lease.id, hedge_after=0.2)
            assert time.monotonic() - started < 1.5  # bounded by the timeout, however many


async def test_a_node_without_a_leader_sends_the_call_to_the_next(etcd: Etcd) -> None:
    """HTTP 503 is etcd's "no leader" (gRPC UNAVAILABLE): another node may serve."""
    async def no_leader(request: web.Request) -> web.Response:
        return web.json_response({"error": "etcdserver: no leader", "code": 14,
                                  "message": "etcdserver: no leader"}, status=503)

    app = web.Application()
    app.router.add_post("/v3/{path:.*}", no_leader)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with EtcdClient([f"http://127.0.0.1:{port}", etcd.url], timeout=2.0) as client:
            kvs, _ = await client.range("/client-test/none/", prefix=True)
            assert kvs == []
            assert client.endpoint == etcd.url
        async with EtcdClient([f"http://127.0.0.1:{port}"], timeout=2.0) as client:
            with pytest.raises(EtcdUnavailable, match="no leader"):
                await client.range("/client-test/none/", prefix=True)
    finally:
        await runner.cleanup()
