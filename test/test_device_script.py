"""scripts/device/sim_run.sh's wheel packing (no GPU needed): `pack` splits the wheels of .whl/a and .whl/b into
folders that each fit one call of the lent machine beside the tracked tree (64 MiB a call), large wheels in parts;
`assemble` (what `setup` runs there) puts the parts back together, byte for byte. A wrong split or order would cost
a session's device minutes to find out."""
import subprocess
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device" / "sim_run.sh"
CALL_BYTES = 64 * 1024 * 1024


def run(args, cwd):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_pack_fits_each_call_and_assemble_restores_the_wheels(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    rng = np.random.default_rng(0)
    (repo / "tracked.bin").write_bytes(rng.bytes(20_000_000))  # the tracked tree: 20 MB
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "tracked.bin"], cwd=repo, check=True)
    wheels = {"a/big-1.0-py3-none-any.whl": rng.bytes(45_000_000), "a/small-1.0-py3-none-any.whl": rng.bytes(3000),
              "b/mid-2.0-py3-none-any.whl": rng.bytes(12_000_000)}
    for name, data in wheels.items():
        (repo / ".whl" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / ".whl" / name).write_bytes(data)
    packed = run(["pack"], repo)
    assert packed.returncode == 0, packed.stderr
    folders = sorted(repo.glob(".whl/p*"))
    assert len(folders) >= 2 and "tree: 20000000 bytes" in packed.stdout
    for folder in folders:  # each folder with the tree (and 3 MB for .gl and the tables) fits one call
        assert sum(f.stat().st_size for f in folder.iterdir()) + 20_000_000 + 3 * 1024 * 1024 <= CALL_BYTES
    files = [f for folder in folders for f in folder.iterdir()]
    parts = sorted(f.name for f in files if ".part" in f.name)
    n = len(parts)  # parts of half a call's room at most: 45 MB in 22 MB parts here
    assert n == 3 and parts == [f"big-1.0-py3-none-any.whl.part{k}-of-{n}" for k in range(1, n + 1)]
    # on the machine: the parts of each call gathered in one folder, then put together once all have come
    gathered = tmp_path / "wheelparts"
    gathered.mkdir()
    first = next(f for f in files if f.name.endswith(f"part1-of-{n}"))
    (gathered / first.name).write_bytes(first.read_bytes())
    assert run(["assemble", str(gathered)], repo).stdout == ""  # one part of three: nothing yet
    for f in files:
        if ".part" in f.name:
            (gathered / f.name).write_bytes(f.read_bytes())
    assembled = run(["assemble", str(gathered)], repo)
    assert assembled.stdout.split() == [str(gathered / "big-1.0-py3-none-any.whl")]
    assert (gathered / "big-1.0-py3-none-any.whl").read_bytes() == wheels["a/big-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in gathered.iterdir()) == ["big-1.0-py3-none-any.whl"]  # the parts are gone
    whole = {f.name: f.read_bytes() for f in files if ".part" not in f.name}
    assert whole == {Path(k).name: v for k, v in wheels.items() if not k.startswith("a/big")}


def test_gemma_parts_are_put_together_and_decompressed_once_all_have_come(tmp_path):
    """`gemma` (one call per .gemma/pK folder): parts kept between calls, the xz file put together and decompressed
    into GEMMA_ROOT/gemma once the last part has come, the small files beside it; byte for byte."""
    import lzma
    import os

    weights = np.random.default_rng(1).integers(0, 16, 3_000_000, dtype=np.uint8).tobytes()  # compressible
    packed = lzma.compress(weights, preset=1)
    size = len(packed) // 3 + 1
    root = tmp_path / "root"
    env = {**os.environ, "GEMMA_ROOT": str(root)}
    for k in range(3):
        call = tmp_path / f"call{k + 1}"
        folder = call / ".gemma" / f"p{k + 1}"
        folder.mkdir(parents=True)
        (folder / f"model.safetensors.xz.part{k + 1}-of-3").write_bytes(packed[k * size:(k + 1) * size])
        if k == 0:
            (folder / "config.json").write_text("{}")
            (folder / "tokens.json").write_text("{}")
        done = subprocess.run(["bash", str(SCRIPT), "gemma"], cwd=call, capture_output=True, text=True, timeout=120,
                              env=env)
        assert done.returncode == 0, done.stderr
        assert ("complete" in done.stdout) == (k == 2), done.stdout
    assert (root / "gemma" / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in (root / "gemma").iterdir()) == ["config.json", "model.safetensors", "tokens.json"]
