"""The services' Redis connections write exactly the bytes redis-py's own packer writes, in C."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from ehrflow_runtime.redis_client import HiredisPacking, make_redis

ARGUMENTS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
)


@given(st.sampled_from(["SET", "EVALSHA", "CONFIG GET", b"HSET", b"CLIENT SETNAME"]), st.lists(ARGUMENTS, max_size=40))
def test_commands_are_packed_to_the_same_bytes(command: str | bytes, arguments: list[object]) -> None:
    ours = make_redis("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    theirs = Connection()
    assert isinstance(ours, HiredisPacking)
    assert b"".join(ours.pack_command(command, *arguments)) == b"".join(theirs.pack_command(command, *arguments))


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_what_redis_py_refuses_is_refused(value: object) -> None:
    connection = make_redis("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    with pytest.raises(DataError):
        connection.pack_command("SET", "key", value)


def test_another_encoding_keeps_redis_pys_packer() -> None:
    connection = make_redis("redis://127.0.0.1:6379/0?encoding=latin-1").connection_pool.make_connection()
    assert connection.pack_command("SET", "k", "é") == Connection(encoding="latin-1").pack_command("SET", "k", "é")


@pytest.mark.parametrize(
    ("url", "base", "settings"),
    [
        ("redis://:secret@redis.example:6380/3?socket_timeout=2", Connection, {"db": 3, "socket_timeout": 2.0}),
        ("rediss://redis.example:6380/0", SSLConnection, {"host": "redis.example", "port": 6380}),
        ("unix:///run/redis.sock?db=1", UnixDomainSocketConnection, {"path": "/run/redis.sock", "db": 1}),
    ],
)
def test_the_url_still_chooses_transport_and_settings(url: str, base: type, settings: dict[str, object]) -> None:
    pool = make_redis(url).connection_pool
    assert issubclass(pool.connection_class, HiredisPacking) and issubclass(pool.connection_class, base)
    assert settings.items() <= pool.connection_kwargs.items()
