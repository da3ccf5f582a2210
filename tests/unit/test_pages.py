"""Unit tests of the kernel facts read for page policies: cgroup hugetlb limits, from sample trees."""

from __future__ import annotations

from pathlib import Path

from mshared.pages import cgroup_room
from mshared.regions import MiB, PagePolicy


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limits_apply_from_every_ancestor(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/pod/broker\n")
    root = tmp_path / "fs"
    write(root / "pod" / "hugetlb.2MB.max", str(64 * MiB))
    write(root / "pod" / "hugetlb.2MB.current", str(16 * MiB))
    write(root / "pod" / "broker" / "hugetlb.2MB.max", "max")
    write(root / "pod" / "broker" / "hugetlb.2MB.current", str(16 * MiB))
    assert cgroup_room(PagePolicy.HUGETLB_2M, proc, root) == 48 * MiB
    assert cgroup_room(PagePolicy.HUGETLB_1G, proc, root) is None
    assert cgroup_room(PagePolicy.SMALL, proc, root) is None


def test_cgroup_v1_hugetlb_controller(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n3:hugetlb:/x\n0::/\n")
    root = tmp_path / "fs"
    write(root / "hugetlb" / "x" / "hugetlb.2MB.limit_in_bytes", str(8 * MiB))
    write(root / "hugetlb" / "x" / "hugetlb.2MB.usage_in_bytes", str(2 * MiB))
    assert cgroup_room(PagePolicy.HUGETLB_2M, proc, root) == 6 * MiB


def test_no_hugetlb_controller_means_no_limit(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n0::/\n")
    assert cgroup_room(PagePolicy.HUGETLB_2M, proc, tmp_path / "fs") is None
