"""Unit tests of the address arena allocator and the region value types."""

from __future__ import annotations

import errno
import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pytest

from mshared.errors import BrokerError
from mshared.regions import (
    Access,
    AddressSpace,
    Attachment,
    GiB,
    KiB,
    MiB,
    PagePolicy,
    Region,
    State,
    align_up,
    format_range,
)

UNIT: Final = 2 * MiB
ARENA_UNITS: Final = 16
ARENA_START: Final = 16 * GiB
ARENA_SIZE: Final = ARENA_UNITS * UNIT
ARENA_END: Final = ARENA_START + ARENA_SIZE
MIN_ADDRESS: Final = 64 * KiB
MAX_ADDRESS: Final = 1 << 47


def make_space(units: int = ARENA_UNITS) -> AddressSpace:
    return AddressSpace(ARENA_START, units * UNIT, MIN_ADDRESS, MAX_ADDRESS)


def at(unit: int) -> int:
    return ARENA_START + unit * UNIT


@contextmanager
def refused(code: int) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value}"


# -- allocate ---------------------------------------------------------------------------------


def test_new_arena_is_all_free() -> None:
    space = make_space()
    assert space.free_bytes == ARENA_SIZE and space.arena_end == ARENA_END


def test_allocate_is_first_fit_lowest_address() -> None:
    space = make_space()
    assert [space.allocate(UNIT, UNIT) for _ in range(3)] == [at(0), at(1), at(2)]
    assert space.allocate(2 * UNIT, UNIT) == at(3)
    space.release(at(1), UNIT)
    assert space.allocate(2 * UNIT, UNIT) == at(5)
    assert space.allocate(UNIT, UNIT) == at(1)
    assert space.allocate(UNIT, UNIT) == at(7)


def test_allocate_honours_alignment() -> None:
    space = make_space()
    assert space.allocate(4 * KiB, 4 * KiB) == at(0)
    assert space.allocate(4 * KiB, 4 * KiB) == at(0) + 4 * KiB
    assert space.allocate(UNIT, UNIT) == at(1)
    assert space.allocate(UNIT, 4 * UNIT) == at(4)
    assert space.allocate(UNIT, UNIT) == at(2)
    assert space.allocate(8 * KiB, 4 * KiB) == at(0) + 8 * KiB
    assert space.free_bytes == ARENA_SIZE - 3 * UNIT - 16 * KiB


def test_alignment_is_of_the_absolute_address() -> None:
    space = AddressSpace(ARENA_START + UNIT, 4 * UNIT, MIN_ADDRESS, MAX_ADDRESS)
    assert space.allocate(UNIT, 2 * UNIT) == ARENA_START + 2 * UNIT
    assert space.allocate(UNIT, UNIT) == ARENA_START + UNIT
    with refused(errno.ENOMEM):
        space.allocate(UNIT, GiB)


def test_allocate_reuses_freed_ranges() -> None:
    space = make_space()
    first = space.allocate(3 * UNIT, UNIT)
    space.release(first, 3 * UNIT)
    assert space.free_bytes == ARENA_SIZE
    assert space.allocate(3 * UNIT, UNIT) == first
    assert space.allocate(ARENA_SIZE - 3 * UNIT, UNIT) == at(3)
    assert space.free_bytes == 0


def test_enomem_when_nothing_fits() -> None:
    space = make_space(4)
    with refused(errno.ENOMEM):
        space.allocate(5 * UNIT, UNIT)
    starts = [space.allocate(UNIT, UNIT) for _ in range(4)]
    with refused(errno.ENOMEM):
        space.allocate(UNIT, UNIT)
    space.release(starts[1], UNIT)
    space.release(starts[3], UNIT)
    assert space.free_bytes == 2 * UNIT
    # Two free units, but not adjacent ones.
    with refused(errno.ENOMEM):
        space.allocate(2 * UNIT, UNIT)
    # Both free units start on odd units, so neither is 2-unit aligned.
    with refused(errno.ENOMEM):
        space.allocate(UNIT, 2 * UNIT)
    assert space.free_bytes == 2 * UNIT
    assert space.allocate(UNIT, UNIT) == at(1)


# -- release and coalescing ----------------------------------------------------------------------


def _full(units: int) -> AddressSpace:
    space = make_space(units)
    for unit in range(units):
        assert space.allocate(UNIT, UNIT) == at(unit)
    return space


def test_release_coalesces_with_the_left_neighbour() -> None:
    space = _full(4)
    space.release(at(1), UNIT)
    space.release(at(2), UNIT)
    assert space.allocate(2 * UNIT, UNIT) == at(1)


def test_release_coalesces_with_the_right_neighbour() -> None:
    space = _full(4)
    space.release(at(2), UNIT)
    space.release(at(1), UNIT)
    assert space.allocate(2 * UNIT, UNIT) == at(1)


def test_release_coalesces_with_both_neighbours() -> None:
    space = _full(5)
    space.release(at(1), UNIT)
    space.release(at(3), UNIT)
    space.release(at(2), UNIT)
    assert space.allocate(3 * UNIT, UNIT) == at(1)
    assert space.free_bytes == 0


def test_release_coalesces_with_the_arena_edges() -> None:
    space = _full(3)
    for unit in (0, 2, 1):
        space.release(at(unit), UNIT)
    assert space.free_bytes == 3 * UNIT
    assert space.allocate(3 * UNIT, UNIT) == at(0)


# -- claim ------------------------------------------------------------------------------------


@pytest.fixture(params=["inside", "below", "above"])
def base(request: pytest.FixtureRequest) -> int:
    """Where a 16-unit window of named ranges lies: in the arena, or clear of it on either side."""
    return {"inside": ARENA_START, "below": ARENA_START - 64 * UNIT, "above": ARENA_END + 64 * UNIT}[request.param]


@pytest.mark.parametrize(
    ("first", "last"),
    [(4, 8), (3, 5), (7, 9), (5, 6), (3, 9), (4, 5), (7, 8)],
    ids=["same", "left-partial", "right-partial", "inside", "containing", "left-edge", "right-edge"],
)
def test_claim_refuses_any_overlap(base: int, first: int, last: int) -> None:
    space = make_space()
    space.claim(base + 4 * UNIT, 4 * UNIT)
    free = space.free_bytes
    with refused(errno.EADDRINUSE):
        space.claim(base + first * UNIT, (last - first) * UNIT)
    assert space.free_bytes == free


def test_claim_refuses_a_one_byte_overlap(base: int) -> None:
    space = make_space()
    space.claim(base + 4 * UNIT, 4 * UNIT)
    with refused(errno.EADDRINUSE):
        space.claim(base + 8 * UNIT - 1, UNIT)
    with refused(errno.EADDRINUSE):
        space.claim(base + 3 * UNIT + 1, UNIT)
    space.claim(base + 8 * UNIT, 1)
    space.claim(base + 3 * UNIT, UNIT)


def test_claim_accepts_adjacent_ranges(base: int) -> None:
    space = make_space()
    space.claim(base + 4 * UNIT, 4 * UNIT)
    space.claim(base + 2 * UNIT, 2 * UNIT)
    space.claim(base + 8 * UNIT, 2 * UNIT)
    space.claim(base + 10 * UNIT, 4 * KiB)
    with refused(errno.EADDRINUSE):
        space.claim(base + 9 * UNIT, UNIT)


def test_claim_after_release_succeeds(base: int) -> None:
    space = make_space()
    space.claim(base + 2 * UNIT, 3 * UNIT)
    space.release(base + 2 * UNIT, 3 * UNIT)
    assert space.free_bytes == ARENA_SIZE
    space.claim(base + 2 * UNIT, 3 * UNIT)


def test_claim_inside_the_arena_is_skipped_by_allocate() -> None:
    space = make_space()
    space.claim(at(1), 2 * UNIT)
    assert space.free_bytes == ARENA_SIZE - 2 * UNIT
    assert space.allocate(UNIT, UNIT) == at(0)
    assert space.allocate(UNIT, UNIT) == at(3)
    with refused(errno.EADDRINUSE):
        space.claim(at(3), UNIT)
    space.release(at(1), 2 * UNIT)
    assert space.allocate(2 * UNIT, UNIT) == at(1)


def test_claim_of_a_range_allocate_handed_out_is_refused() -> None:
    space = make_space()
    start = space.allocate(2 * UNIT, UNIT)
    with refused(errno.EADDRINUSE):
        space.claim(start + UNIT, 2 * UNIT)


def test_named_ranges_outside_the_arena_do_not_use_it() -> None:
    space = make_space()
    space.claim(ARENA_START - 4 * UNIT, 4 * UNIT)
    space.claim(ARENA_END, 4 * UNIT)
    assert space.free_bytes == ARENA_SIZE
    assert space.allocate(ARENA_SIZE, UNIT) == ARENA_START
    space.release(ARENA_START - 4 * UNIT, 4 * UNIT)
    space.release(ARENA_END, 4 * UNIT)
    assert space.free_bytes == 0


@pytest.mark.parametrize(
    ("start", "size"),
    [
        (ARENA_START - UNIT, 2 * UNIT),
        (ARENA_END - UNIT, 2 * UNIT),
        (ARENA_START - UNIT, ARENA_SIZE + 2 * UNIT),
        (0, UNIT),
        (MIN_ADDRESS - 4 * KiB, UNIT),
        (MAX_ADDRESS - UNIT, 2 * UNIT),
        (MAX_ADDRESS, UNIT),
    ],
    ids=["straddles-start", "straddles-end", "contains-arena", "null-page", "below-min", "crosses-max", "above-max"],
)
def test_claim_refuses_impossible_ranges_with_einval(start: int, size: int) -> None:
    space = make_space()
    with refused(errno.EINVAL):
        space.check_named(start, size)
    with refused(errno.EINVAL):
        space.claim(start, size)
    assert space.free_bytes == ARENA_SIZE


def test_claim_at_the_address_space_edges() -> None:
    space = make_space()
    space.claim(MIN_ADDRESS, UNIT)
    space.claim(MAX_ADDRESS - UNIT, UNIT)


def test_einval_wins_over_eaddrinuse() -> None:
    space = make_space()
    space.claim(at(ARENA_UNITS - 1), UNIT)
    with refused(errno.EINVAL):
        space.claim(at(ARENA_UNITS - 1), 2 * UNIT)


# -- a long random run against a model --------------------------------------------------------


def _first_fit(live: dict[int, int], size: int, alignment: int, arena_end: int) -> int | None:
    cursor = ARENA_START
    taken = sorted((start, start + length) for start, length in live.items() if ARENA_START <= start < arena_end)
    for start, end in [*taken, (arena_end, arena_end)]:
        candidate = align_up(cursor, alignment)
        if candidate + size <= start:
            return candidate
        cursor = end
    return None


def _overlaps(live: dict[int, int], start: int, size: int) -> bool:
    return any(s < start + size and start < s + n for s, n in live.items())


def test_random_operations_match_a_model() -> None:
    grain = 4 * KiB
    arena_size = 512 * grain
    arena_end = ARENA_START + arena_size
    space = AddressSpace(ARENA_START, arena_size, MIN_ADDRESS, MAX_ADDRESS)
    rng = random.Random(20240611)
    live: dict[int, int] = {}
    outcomes = {"allocated": 0, "enomem": 0, "claimed": 0, "eaddrinuse": 0, "einval": 0, "released": 0}
    for _ in range(4000):
        op = rng.random()
        if op < 0.4:
            size = rng.randint(1, 40) * grain
            alignment = rng.choice([grain, 2 * grain, 8 * grain, 32 * grain])
            expected = _first_fit(live, size, alignment, arena_end)
            if expected is None:
                with refused(errno.ENOMEM):
                    space.allocate(size, alignment)
                outcomes["enomem"] += 1
            else:
                assert space.allocate(size, alignment) == expected
                live[expected] = size
                outcomes["allocated"] += 1
        elif op < 0.65:
            size = rng.randint(1, 24) * grain
            where = rng.choice(["inside", "inside", "below", "above"])
            if where == "inside":
                start = ARENA_START + rng.randrange(arena_size // grain) * grain
            elif where == "below":
                start = ARENA_START - rng.randrange(1, 128) * grain
            else:
                start = arena_end + rng.randrange(128) * grain
            if start < ARENA_START < start + size or start < arena_end < start + size:
                with refused(errno.EINVAL):
                    space.claim(start, size)
                outcomes["einval"] += 1
            elif _overlaps(live, start, size):
                with refused(errno.EADDRINUSE):
                    space.claim(start, size)
                outcomes["eaddrinuse"] += 1
            else:
                space.claim(start, size)
                live[start] = size
                outcomes["claimed"] += 1
        elif live:
            start = rng.choice(sorted(live))
            space.release(start, live.pop(start))
            outcomes["released"] += 1
        ranges = sorted((start, start + size) for start, size in live.items())
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(ranges))
        in_arena = sum(size for start, size in live.items() if ARENA_START <= start < arena_end)
        assert space.free_bytes + in_arena == arena_size
    assert all(count > 20 for count in outcomes.values()), outcomes
    for start in sorted(live):
        space.release(start, live.pop(start))
    assert space.allocate(arena_size, arena_size) == ARENA_START


# -- value types ------------------------------------------------------------------------------


def test_page_policies() -> None:
    assert [policy.value for policy in PagePolicy] == ["4k", "thp", "hugetlb-2m", "hugetlb-1g"]
    assert PagePolicy("hugetlb-2m").huge_page_bytes == 2 * MiB
    assert PagePolicy.HUGETLB_1G.huge_page_bytes == GiB
    assert PagePolicy.SMALL.huge_page_bytes == 0 and PagePolicy.THP.huge_page_bytes == 0
    with pytest.raises(ValueError):
        PagePolicy("2m")


def test_a_new_region_is_active_unattached_and_unlinked_from_any_tree() -> None:
    region = Region(7, "default", at(0), UNIT, PagePolicy.SMALL, 0o640, 1000, 100)
    assert (region.state, region.attach_count, region.backing, region.path) == (State.ACTIVE, 0, None, "")
    assert "(unlinked)" in repr(region) and hex(at(0)) in repr(region)
    attachment = Attachment(9, region, Access.READ_ONLY)
    assert (attachment.id, attachment.region, attachment.access) == (9, region, Access.READ_ONLY)


def test_helpers() -> None:
    assert align_up(0, UNIT) == 0
    assert align_up(1, UNIT) == UNIT
    assert align_up(UNIT, UNIT) == UNIT
    assert format_range(0x1000, 0x1000) == "0x1000-0x2000"
