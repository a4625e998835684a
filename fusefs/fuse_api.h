// Pins the libfuse API this module is written against: the 3.12 low-level API, which the installed
// libfuse 3.14 provides (fuse_loop_cfg_*, `conn->want |= FUSE_CAP_...`). Newer-only APIs
// (fuse_set_feature_flag, passthrough fds, io_uring) must not be used. Include this header instead
// of <fuse_lowlevel.h>; it is private to fusefs/ (only .cc files include it).
#pragma once

#ifdef FUSE_USE_VERSION
#error "fusefs/fuse_api.h must be the only place that sets FUSE_USE_VERSION"
#endif
#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
