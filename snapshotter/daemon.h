// The ipfly-snapshotter program (main.cc only calls RunSnapshotterMain):
//
//   ipfly-snapshotter [--config FILE] [--socket PATH] [--root DIR] [--resolver URL]
//                     [--source SPEC]... [--metrics ADDR] [--log-level L] [--no-lazy]
//
// Flags override the config file ([snapshotter] section). Lazy layers come from
// MakeFuseLazyLayers; if they cannot start, the snapshotter runs as a plain overlay snapshotter
// (logged). SIGTERM/SIGINT stop it cleanly: gRPC shutdown, then the lazy layers are destroyed.
#pragma once

namespace ipfly::snapshotter {

int RunSnapshotterMain(int argc, char** argv);

}  // namespace ipfly::snapshotter
