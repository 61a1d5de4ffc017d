/*
 * libFuzzer target for the GGUF reader (recorder/tensors/gguf.c) and the
 * manifest engine behind it: as fuzz_safetensors.c, with GGUF input (the
 * corpus holds v2 and v3 files with every metadata type, nested arrays,
 * quantised tensors and custom alignment).
 *
 *   tests/fuzz/run.sh 60 build-fuzz fuzz_gguf
 */
#define FUZZ_READER cr_reader_gguf
#include "fuzz_tensors.h"
