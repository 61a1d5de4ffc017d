/*
 * libFuzzer target for the safetensors reader (recorder/tensors/safetensors.c)
 * and the manifest engine behind it. Each input is written to a memfd and
 * read twice: once writing a delta base, once against that base (so the
 * numeric delta runs over whatever floats the input declares). A manifest
 * that comes back must be self-consistent: tensors inside the file, its
 * JSON encodable, and parsing that JSON back must give the same digest.
 *
 *   tests/fuzz/run.sh 60 build-fuzz fuzz_safetensors
 */
#define FUZZ_READER cr_reader_safetensors
#include "fuzz_tensors.h"
