"""Records go to the partition Kafka's (and aiokafka's) default partitioner chooses for their key."""

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from ehrflow_ingest.partitioner import murmur2, partition


@given(st.binary(max_size=200))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


def test_murmur2_matches_the_java_client() -> None:
    """Values of Kafka's own ``UtilsTest.testMurmur2`` (signed Java ints), as unsigned 32-bit numbers."""
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in cases} == {key: value & 0xFFFFFFFF for key, value in cases.items()}


@given(st.binary(max_size=80), st.integers(1, 64))
def test_a_keyed_record_goes_where_the_default_partitioner_puts_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition(key, partitions, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert partition(None, [0, 1, 2], [2]) == 2
