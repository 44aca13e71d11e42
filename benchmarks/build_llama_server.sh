#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the very llama.cpp that llama-cpp-python vendors (the
# pinned sdist), as the peer of benchmarks/engine_paths.py. It is built like localserve's
# portable engine (GGML_BACKEND_DL, GGML_NATIVE=OFF), so it loads the same CPU variant
# libraries, which the benchmark lays beside it one at a time: both sides then run the same
# kernels. About 5 minutes on 2 cores; the result lands in build/llama-server/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
VERSION=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
WORK=build/llama-server
mkdir -p "$WORK"
if [ ! -d "$WORK/src" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
    mkdir -p "$WORK/src"
    tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK/src" --strip-components=1
fi
cmake -S "$WORK/src/vendor/llama.cpp" -B "$WORK/cmake" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build "$WORK/cmake" --target llama-server -j "$(nproc)" >/dev/null
echo "built $WORK/cmake/bin/llama-server (llama.cpp from llama-cpp-python $VERSION)"
