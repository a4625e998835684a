#include "core/block.h"

namespace ipfly {

Result<Block> Block::Verify(const mf::Cid& cid, Bytes data) {
  if (data.size() > kMaxBlockSize) {
    return TooLarge("block " + cid.ToString() + " is " + std::to_string(data.size()) +
                    " bytes, over the 2 MiB limit");
  }
  auto st = cid.multihash().Verify(data);
  if (!st.ok()) return std::move(st).error().With("block " + cid.ToString());
  return Block(cid, std::make_shared<const Bytes>(std::move(data)));
}

Result<Block> Block::Make(uint64_t codec, Bytes data, int version) {
  if (data.size() > kMaxBlockSize) {
    return TooLarge("block of " + std::to_string(data.size()) + " bytes is over the 2 MiB limit");
  }
  auto mh = mf::Multihash::Sha256Of(data);
  mf::Cid cid = mf::Cid::V1(codec, std::move(mh));
  if (version == 0) cid = IPFLY_TRY(cid.ToV0());
  return Block(std::move(cid), std::make_shared<const Bytes>(std::move(data)));
}

}  // namespace ipfly
