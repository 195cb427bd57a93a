"""The memory cgroup files, v1 and v2, read from recorded copies."""

from __future__ import annotations

from gencore import _procfs

MIB = 1 << 20


def test_v2_memory_files(tmp_path):
    (tmp_path / "memory.max").write_text("536870912\n")
    (tmp_path / "memory.high").write_text("max\n")
    (tmp_path / "memory.current").write_text("123456789\n")
    (tmp_path / "memory.peak").write_text("234567890\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 4\nmax 17\noom 2\noom_kill 1\n")
    m = _procfs.read_cgroup_memory("v2", str(tmp_path))
    assert (m.limit, m.high, m.usage, m.peak) == (512 * MIB, None, 123456789, 234567890)
    assert (m.oom_kills, m.high_events) == (1, 4)
    assert m.headroom == 512 * MIB - 123456789
    (tmp_path / "memory.high").write_text("200000000\n")
    m = _procfs.read_cgroup_memory("v2", str(tmp_path))
    assert m.headroom == 200000000 - 123456789  # the lower of the two


def test_v1_memory_files(tmp_path):
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (tmp_path / "memory.usage_in_bytes").write_text("1048576\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("2097152\n")
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    m = _procfs.read_cgroup_memory("v1", str(tmp_path))
    assert (m.limit, m.high, m.usage, m.peak, m.oom_kills) == (None, None, MIB, 2 * MIB, 3)
    assert m.headroom is None
    (tmp_path / "memory.limit_in_bytes").write_text("4194304\n")
    assert _procfs.read_cgroup_memory("v1", str(tmp_path)).headroom == 3 * MIB


def test_the_test_seam_names_a_recorded_group(tmp_path, monkeypatch):
    (tmp_path / "memory.max").write_text("1000\n")
    (tmp_path / "memory.current").write_text("10\n")
    monkeypatch.setenv("GENCORE_CGROUP", f"v2:{tmp_path}")
    m = _procfs.cgroup_memory()
    assert m is not None and (m.version, m.limit, m.usage) == ("v2", 1000, 10)
