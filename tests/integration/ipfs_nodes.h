// Real IPFS nodes for the integration tests, started once per test binary on free loopback
// ports and stopped by PID at the end:
//   - js-ipfs 0.66 (Kubo-compatible RPC API + plain gateway), configured fully offline;
//   - a Helia trustless gateway (?format=raw|car, entity-bytes) over a file blockstore.
// Missing node kits are a hard failure (run scripts/setup.sh), never a skip.
#pragma once

#include <sys/types.h>

#include <string>

#include "tests/support/process.h"

namespace ipfly::testing {

struct IpfsNodes {
  std::string rpc_url;      // js-ipfs RPC, e.g. http://127.0.0.1:PORT
  std::string gateway_url;  // Helia trustless gateway
  pid_t jsipfs_pid = -1;
  pid_t helia_pid = -1;
};

// The nodes started by the test environment (valid inside tests).
const IpfsNodes& Nodes();
// Path of the ipfly binary under test.
std::string IpflyBin();

// Adds a file to the js-ipfs node through its RPC API; returns the CID (base32 for v1) or "".
std::string JsIpfsAdd(const std::string& path, const std::string& params);
// Adds a file to the Helia gateway's blockstore (Kubo-like params: cid-version, chunker).
std::string HeliaAdd(const std::string& path, const std::string& params);

}  // namespace ipfly::testing
