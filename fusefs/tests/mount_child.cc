// Helper process for the stale-mount tests: mounts a FuseFs with one small tree at argv[1], then
// sleeps until it is killed (the test SIGKILLs it to leave a stale mount behind).
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "core/base/log.h"
#include "fusefs/fuse_fs.h"
#include "fusefs/tests/mem_tree.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
    return 2;
  }
  ipfly::InitLogging("warn");
  auto tree = std::make_shared<ipfly::fusefs::testing::MemTree>("child");
  tree->AddFile("hello", "from the child\n");
  ipfly::fusefs::FuseOptions options;
  options.mountpoint = argv[1];
  auto fs = ipfly::fusefs::FuseFs::Mount(options);
  if (!fs.ok()) {
    std::fprintf(stderr, "mount: %s\n", fs.error().ToString().c_str());
    return 1;
  }
  if (!(*fs)->Attach("t", tree).ok()) return 1;
  for (;;) pause();
}
