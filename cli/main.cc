#include <malloc.h>

#include "cli/cli.h"

int main(int argc, char** argv) {
  // Blocks are 256 KiB - 1 MiB buffers allocated and freed at a high rate: keep them on the heap
  // instead of a fresh mmap (and page faults) per block.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  return ipfly::cli::RunCli(argc, argv);
}
