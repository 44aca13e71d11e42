"""Which vision projector a pull brings: the rule of ``hub.catalog.choose_projector``, on the
files a repo lists (no Hub needed: the choice is made from names and sizes)."""

from __future__ import annotations

import pytest

from localserve.errors import RepoNotFoundError
from localserve.hardware.memory import GpuMemory, MemorySnapshot
from localserve.hub.catalog import RemoteFile, RemoteModel, choose_model, choose_projector
from localserve.hub.fit import HEADROOM, IMAGE_ENCODING_BYTES
from localserve.hub.library import is_projector_name

GB = 10**9
PLENTY = MemorySnapshot(ram_total_bytes=64 * GB, ram_free_bytes=32 * GB)
PROJECTORS = (
    RemoteFile("mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf", 1_350_000_000, None),
    RemoteFile("mmproj-Qwen2.5-VL-7B-Instruct-bf16.gguf", 1_350_000_000, None),
    RemoteFile("mmproj-Qwen2.5-VL-7B-Instruct-f32.gguf", 2_700_000_000, None),
    RemoteFile("mmproj-Qwen2.5-VL-7B-Instruct-Q8_0.gguf", 720_000_000, None),
)


def model(
    quant: str, size: int = 4 * GB, projectors: tuple[RemoteFile, ...] = PROJECTORS
) -> RemoteModel:
    files = (RemoteFile(f"Qwen2.5-VL-7B-Instruct-{quant}.gguf", size, None),)
    return RemoteModel("example/Qwen2.5-VL-7B-Instruct-GGUF", "main", files, projectors)


@pytest.mark.parametrize(
    ("quant", "precision"),
    [("F16", "f16"), ("BF16", "bf16"), ("F32", "f32"), ("Q8_0", "Q8_0"), ("Q4_K_M", "f16")],
)
def test_the_models_own_precision_else_f16(quant: str, precision: str) -> None:
    chosen = choose_projector(model(quant), PLENTY)
    assert chosen.name == f"mmproj-Qwen2.5-VL-7B-Instruct-{precision}.gguf"


def test_the_preference_goes_f16_bf16_f32_q8_0() -> None:
    left = list(PROJECTORS)
    order = []
    while left:
        chosen = choose_projector(model("Q4_K_M", projectors=tuple(left)), PLENTY)
        order.append(chosen.name.rsplit("-", 1)[-1])
        left.remove(chosen)
    assert order == ["f16.gguf", "bf16.gguf", "f32.gguf", "Q8_0.gguf"]


def test_the_first_that_fits_memory_else_the_smallest() -> None:
    weights = 4 * GB
    f16, q8 = PROJECTORS[0], PROJECTORS[3]
    # Room for the model, the Q8_0 projector and its image allowance, not for the F16 one.
    free = (weights + q8.size + IMAGE_ENCODING_BYTES) / HEADROOM + 1000
    tight = MemorySnapshot(ram_total_bytes=16 * GB, ram_free_bytes=int(free))
    assert choose_projector(model("Q4_K_M", weights), tight) == q8
    # A GPU with room for the F16 one counts too.
    gpu = GpuMemory(0, "test GPU", 24 * GB, 20 * GB)
    roomy_gpu = MemorySnapshot(ram_total_bytes=16 * GB, ram_free_bytes=int(free), gpus=[gpu])
    assert choose_projector(model("Q4_K_M", weights), roomy_gpu) == f16
    # Even the model's own precision gives way when it does not fit.
    assert choose_projector(model("F32", weights), tight) == q8
    # Nothing fits: the smallest, the best chance there is.
    none = MemorySnapshot(ram_total_bytes=8 * GB, ram_free_bytes=1 * GB)
    assert choose_projector(model("Q4_K_M", weights), none) == q8


def test_a_lone_projector_is_taken_whatever_its_name() -> None:
    only = (RemoteFile("mmproj-model.gguf", 600_000_000, None),)
    tiny = MemorySnapshot(ram_total_bytes=GB, ram_free_bytes=1)
    assert choose_projector(model("Q4_K_M", projectors=only), tiny) == only[0]


def test_choose_model_attaches_the_projector_unless_told_not_to() -> None:
    models = [model("Q4_K_M"), model("Q8_0")]
    pulled = choose_model("example/Qwen2.5-VL-7B-Instruct-GGUF", "Q8_0", models, memory=PLENTY)
    assert pulled.mmproj == PROJECTORS[3]
    assert pulled.size == pulled.weights_size + PROJECTORS[3].size
    assert [f.name for f in pulled.downloads] == [pulled.first_file, PROJECTORS[3].name]
    plain = choose_model("example/X", None, models, mmproj=False)
    assert plain.mmproj is None and plain.quant == "Q4_K_M" and plain.size == 4 * GB


def test_a_projector_named_as_the_model_to_pull_is_one_clear_refusal() -> None:
    with pytest.raises(RepoNotFoundError, match="is a vision projector, not a model"):
        choose_model("example/X", PROJECTORS[0].name, [model("Q4_K_M")])


@pytest.mark.parametrize(
    ("name", "projector"),
    [
        ("mmproj-model-f16.gguf", True),
        ("mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf", True),
        ("mmproj-F16.gguf", True),
        ("mmproj-BF16.gguf", True),
        ("vision/mmproj-Q8_0.gguf", True),
        ("llava-v1.5-7b-mmproj-Q4_0.gguf", True),
        ("Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf", False),
        ("mmproj-F16.gguf.md", False),
    ],
)
def test_projector_file_names(name: str, projector: bool) -> None:
    assert is_projector_name(name) is projector


def test_names_without_a_precision_are_not_a_match_for_each_other() -> None:
    """A model and a projector whose names say no precision do not "match": F16 still wins."""
    unnamed = (
        RemoteFile("mmproj.gguf", 600_000_000, None),
        RemoteFile("mmproj-f16.gguf", 900_000_000, None),
    )
    files = (RemoteFile("model.gguf", 4 * GB, None),)
    plain = RemoteModel("example/X", "main", files, unnamed)
    assert choose_projector(plain, PLENTY).name == "mmproj-f16.gguf"
