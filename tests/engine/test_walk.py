import os

from engine.walk import iter_files, walk_source


def test_walk_is_sorted_and_complete(tmp_path):
    for rel in ["b/2.dcm", "b/1.dcm", "a/x/9.dcm", "top.dcm"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 3)
    found = [os.path.relpath(f.path, tmp_path) for f in iter_files(str(tmp_path))]
    assert found == ["top.dcm", "a/x/9.dcm", "b/1.dcm", "b/2.dcm"]
    assert all(f.size == 3 for f in iter_files(str(tmp_path)))


def test_symlinked_folders_are_not_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.dcm").write_bytes(b"1")
    os.symlink(str(tmp_path), str(tmp_path / "real" / "loop"))
    assert len(list(iter_files(str(tmp_path)))) == 1


def test_walk_is_lazy(tmp_path):
    for i in range(3):
        d = tmp_path / ("d%d" % i)
        d.mkdir()
        (d / "f").write_bytes(b"1")
    gen = walk_source(str(tmp_path))
    first = next(gen)
    assert first.directory.endswith("d0") and len(first.files) == 1
