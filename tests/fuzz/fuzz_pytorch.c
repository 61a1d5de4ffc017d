/*
 * libFuzzer target for the PyTorch zip reader (recorder/tensors/pytorch.c:
 * central directory checks, libarchive over the read callback, data.pkl
 * through the pickle reader and the tensor mapping) and the manifest engine
 * behind it. Each input is written to a memfd and read as in
 * fuzz_tensors.h: once writing a delta base, once against it, once against
 * the file in place; a manifest that comes back must be self-consistent.
 * The corpus (tests/fuzz/corpus/pytorch/) holds tiny real torch.save files.
 *
 *   tests/fuzz/run.sh 60 build-fuzz fuzz_pytorch
 */
#define FUZZ_READER cr_reader_pytorch
#include "fuzz_tensors.h"
